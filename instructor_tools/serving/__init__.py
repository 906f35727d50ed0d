"""Servers for the instructor and the class: the instructor's JupyterLab, the classroom JupyterHub and its exchange."""
