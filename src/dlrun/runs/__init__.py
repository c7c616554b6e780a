"""What a run folder is: where each file lives, who may write it, the commands that resume a run
or finish a sweep, and its results file. Torch-free: the command line asks these before anything
heavy is imported."""
