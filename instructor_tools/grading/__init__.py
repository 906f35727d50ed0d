"""Grading a class: autograding in a sandbox, nbgrader's execution steps, tamper checks, regrades, deadlines,
look-alike submissions and grade sheets for a learning-management system."""
