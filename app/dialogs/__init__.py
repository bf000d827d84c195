"""The viewer's dialogs, one module each."""
