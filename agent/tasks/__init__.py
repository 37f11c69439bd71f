"""Task handlers the agent runs when the controller's reply carries them (see ``agent.runner.TASK_HANDLERS``)."""
