#!/usr/bin/env python3
"""Validate a CycloneDX 1.5 JSON BOM against the official JSON schema.

The schema files come from PyPI's `cyclonedx-python-lib` (cyclonedx/schema/_res/), so no network is needed.
`jsonschema` and `referencing` come with its json-validation extra:
    pip install 'cyclonedx-python-lib[json-validation]'
Usage: python3 validate_cyclonedx.py BOM.json
Exit codes: 0 valid, 1 invalid (errors printed), 2 usage/unreadable input, 77 dependency missing.
"""
import json
import os
import sys

MISSING = 77


def main(argv):
    if len(argv) != 2:
        print("usage: validate_cyclonedx.py BOM.json", file=sys.stderr)
        return 2
    try:
        import cyclonedx  # noqa: F401  (provides the schema files)
        import jsonschema
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT7
    except ImportError as error:
        print(f"missing dependency ({error}): pip install 'cyclonedx-python-lib[json-validation]'", file=sys.stderr)
        return MISSING

    res_dir = os.path.join(os.path.dirname(cyclonedx.__file__), "schema", "_res")
    # Newer releases ship *.SNAPSHOT.schema.json, older ones *.schema.json.
    candidates = ["bom-1.5.schema.json", "bom-1.5.SNAPSHOT.schema.json"]
    bom_schema_path = next((os.path.join(res_dir, c) for c in candidates
                            if os.path.exists(os.path.join(res_dir, c))), None)
    if bom_schema_path is None:
        print(f"no CycloneDX 1.5 schema in {res_dir}: pip install --upgrade 'cyclonedx-python-lib[json-validation]'", file=sys.stderr)
        return MISSING

    # Register every JSON schema of the package so relative $refs (spdx, jsf) resolve offline,
    # both under its declared $id and under its file name relative to the bom schema's base URI.
    registry = Registry()
    base = "http://cyclonedx.org/schema/"
    for name in sorted(os.listdir(res_dir)):
        if not name.endswith(".schema.json"):
            continue
        with open(os.path.join(res_dir, name), encoding="utf-8") as handle:
            contents = json.load(handle)
        resource = Resource.from_contents(contents, default_specification=DRAFT7)
        uris = {base + name, base + name.replace(".SNAPSHOT", "")}
        if isinstance(contents, dict) and isinstance(contents.get("$id"), str):
            uris.add(contents["$id"])
        for uri in uris:
            registry = registry.with_resource(uri, resource)

    with open(bom_schema_path, encoding="utf-8") as handle:
        schema = json.load(handle)
    try:
        with open(argv[1], encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as error:
        print(f"cannot read {argv[1]}: {error}", file=sys.stderr)
        return 2

    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, registry=registry, format_checker=validator_class.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        for error in errors:
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            print(f"{path}: {error.message}")
        return 1
    print("valid CycloneDX 1.5")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
