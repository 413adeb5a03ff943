"""Jobs: their models, the submission service, the poller, dependencies, staging,
events and usage; the job store's contract."""
