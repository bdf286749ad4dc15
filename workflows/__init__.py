"""The workflow definitions shipped with casework (package data: ``casework.workflows``)."""
