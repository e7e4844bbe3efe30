"""Workers: run jobs from the database with the `ctrw` library (this side imports torch)."""
