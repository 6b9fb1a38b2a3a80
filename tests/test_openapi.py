"""The OpenAPI document is complete. schemathesis fuzzes the stack from it: tests/faults/test_fuzzing.py."""
import re


def test_document_covers_every_route(app):
    """Every API route; the demo page's routes (api/web/page.py, endpoints `web.*`) are for a person with
    a browser, not API operations, and are not in the document."""
    rules = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule) for rule in app.url_map.iter_rules()
             if rule.endpoint != "static" and not rule.endpoint.startswith("web.")}
    documented = set(app.test_client().get("/openapi.json").get_json()["paths"])
    assert documented == rules - {"/openapi.json"}
