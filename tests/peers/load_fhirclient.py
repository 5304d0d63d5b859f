#!/usr/bin/env python3
"""Loads fixtures with the SMART on FHIR Python client's R4 models (PyPI `fhirclient`), an
independent reading of FHIR R4 that Signpost's authors did not write.

    python load_fhirclient.py [FIXTURES_DIR]

FIXTURES_DIR defaults to the workspace's fixtures/. Every valid fixture is loaded: gp-system/*.json
and profiles/*/valid/*.json. Each is instantiated by its resourceType through
fhirclient.models.fhirelementfactory.FHIRElementFactory, which is strict: an unknown element, a
wrong JSON type or a missing element that R4 requires (1..1) raises FHIRValidationError, for the
resource and every resource nested in it (Bundle entries). The loaded model is written back with
as_json() to be sure it round-trips. Prints one line per file, `OK <file>` or
`FAIL <file>: <error>`, then a count; exits 1 if any file failed (or none was found).
"""
import glob
import json
import os
import sys

from fhirclient.models.fhirelementfactory import FHIRElementFactory

HERE = os.path.dirname(os.path.abspath(__file__))


def load(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    resource_type = data.get("resourceType")
    if not resource_type:
        raise ValueError("no resourceType")
    resource = FHIRElementFactory.instantiate(resource_type, data)
    if type(resource).__name__ != resource_type:
        raise ValueError(f"fhirclient has no R4 model for {resource_type}")
    resource.as_json()


def main():
    fixtures = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "fixtures"))
    files = sorted(glob.glob(os.path.join(fixtures, "gp-system", "*.json")))
    files += sorted(glob.glob(os.path.join(fixtures, "profiles", "*", "valid", "*.json")))
    failed = 0
    for path in files:
        rel = os.path.relpath(path, fixtures)
        try:
            load(path)
            print(f"OK {rel}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, whatever its kind
            failed += 1
            message = " ".join(str(e).split())
            print(f"FAIL {rel}: {type(e).__name__}: {message}")
    print(f"{len(files) - failed} loaded, {failed} failed")
    if not files:
        print(f"no fixtures found under {fixtures}")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
