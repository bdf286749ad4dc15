"""The default settings shipped with casework (package data: ``casework.config``)."""
