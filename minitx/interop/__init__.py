"""Models from other toolkits as minitx runs."""
