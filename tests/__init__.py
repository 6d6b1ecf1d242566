"""Test files are named `test_<stage>_<thing>.py`, so a behaviour's test is found from
the stage that owns it: `api`, `cache`, `routing`, `team`, `upstream`, `server`,
`status`, `config`, `request_log`, `metrics`, `redaction`, `cli` (the folders and modules
of app/). Three groups cut across the stages: `e2e` (one behaviour of the whole proxy
through its real server and the fake OpenRouter), `store` (one contract run against every
implementation of a store), and `fixture`/`repo` (the test helpers themselves, and checks
on the repository). `test_docker.py` and `test_readme_examples.py` keep the names the
Dockerfile and the README give them."""
