"""Keeping a student's code in its place: the grading sandbox (bubblewrap) and control groups for the grader and the hub."""
