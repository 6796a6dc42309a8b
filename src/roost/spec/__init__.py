"""The Fly Machines wire vocabulary shared by the API, the agent and the CLI."""
