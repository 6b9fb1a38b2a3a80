"""The OpenAPI document is complete. schemathesis fuzzes the stack from it: tests/faults/test_fuzzing.py."""
import re


def test_document_covers_every_route(app):
    rules = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule) for rule in app.url_map.iter_rules()
             if rule.endpoint != "static"}
    documented = set(app.test_client().get("/openapi.json").get_json()["paths"])
    assert documented == rules - {"/openapi.json"}
