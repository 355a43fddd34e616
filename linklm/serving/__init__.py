"""The serving district: predicting for a planner, model cards, publishing, the champion
registry and the artifact store. Imports from every district below it."""
