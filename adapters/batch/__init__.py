"""What every batch-scheduler adapter shares: the per-job directory at the center,
its markers, rejections, and the per-job answers the evaluation compares with."""
