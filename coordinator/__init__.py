"""The coordinator: knows the parties, agrees jobs with them, triggers runs,
follows progress and hands results only to authorised identities. It never
sees a data point or a share."""
