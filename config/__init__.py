"""The ground floor: the plan schema, the settings and the project layout. Imports nothing of the project."""
