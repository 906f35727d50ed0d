"""The course: its folder and nbgrader configuration, the student versions, validation, submissions, the students' zip."""
