"""Development tools that never ship in the Lambda package: the demo, local moto and Slack
servers, and the synthetic CloudTrail generator (tests, benchmarks and the demo use them)."""
