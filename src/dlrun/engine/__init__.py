"""One training run: build the objects, fit them epoch by epoch, evaluate, finish."""
