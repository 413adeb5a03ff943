"""What every batch-scheduler adapter shares: the flow (`adapter`) that runs a
scheduler's commands (`scheduler`) and lets submissions share them (`submitting`), the
per-job directory at the center (`jobdir`), its markers (`markers`) and how a job ended
(`settle`), rejections, load helpers, and the per-job answers the evaluation compares
with (`truth`)."""
