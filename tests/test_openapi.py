"""The OpenAPI document is complete, and schemathesis finds no 5xx and no non-conforming response."""
import re
import subprocess
import sys

# Checks left out, and why: positive_data_acceptance expects any schema-valid body to succeed, but
# only tensors of the model's shape can (the schema cannot know every model's shape); the auth and
# resource-lifecycle checks test APIs with users and created resources, which this one has not.
EXCLUDED = "positive_data_acceptance,ignored_auth,object_level_authorization,use_after_free,ensure_resource_availability"


def test_document_covers_every_route(app):
    rules = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule) for rule in app.url_map.iter_rules()
             if rule.endpoint != "static"}
    documented = set(app.test_client().get("/openapi.json").get_json()["paths"])
    assert documented == rules - {"/openapi.json"}


def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(server):
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/openapi.json", "--checks", "all",
         "--exclude-checks", EXCLUDED, "--max-examples", "40", "--seed", "7", "--no-color"],
        capture_output=True, text=True, timeout=600)
    print(run.stdout[-3000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "generated," in run.stdout and " 0 passed" not in run.stdout
