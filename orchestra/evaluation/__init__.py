"""Numbers measured outside training: offline linear evaluation and the no-training kNN floors."""
