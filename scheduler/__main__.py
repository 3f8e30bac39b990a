"""Run the reminder scheduler as its own process: ``python -m scheduler`` is ``careplan scheduler``."""

from careplan.cli import scheduler_command

if __name__ == "__main__":
    scheduler_command()
