"""The programs that start from a checkpoint: dlrun-eval and dlrun-predict."""
