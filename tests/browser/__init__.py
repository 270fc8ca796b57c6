"""Browser tests: the monitor page in a real headless Chromium."""
