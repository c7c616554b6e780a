"""What a user reads: the terminal, TensorBoard, the table after a sweep."""
