"""The hashicorp/kubernetes provider's resource schema, read from the prebuilt cdktn bindings'
jsii assembly (the package is downloaded, not installed), to check the synthesized kubernetes
stack the way `terraform validate` would if the provider could be installed here: every
attribute and block exists in the schema, and every required one is given. The same for the
hashicorp/helm provider's `helm_release` (orchestrator airflow: the chart's release), from its
own bindings.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGE = "cdktn-provider-kubernetes==17.1.0"  # bindings of hashicorp/kubernetes 3.4.0
HELM_PACKAGE = "cdktn-provider-helm==15.1.0"  # bindings of hashicorp/helm 3.3.0
META = {"//", "lifecycle", "depends_on", "count", "for_each", "provider", "provisioner",
        "connection"}
RESOURCE_RE = re.compile(r"\{@link \S+/docs/resources/\S+ ((?:kubernetes|helm)_\w+)\}")


def load_assembly(cache: Path, provider: str = "kubernetes") -> dict:
    folder = cache / f"{provider}-bindings"
    package = HELM_PACKAGE if provider == "helm" else PACKAGE
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "-d", str(folder), package], check=True)
        wheels = sorted(folder.glob("*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(name))) as tgz:
            return json.load(tgz.extractfile("package/.jsii"))


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


class KubernetesSchema:
    """One provider's resource schema (kubernetes by default, or helm)."""

    def __init__(self, assembly: dict, provider: str = "kubernetes"):
        self.types = assembly["types"]
        self.package = f"@cdktn/provider-{provider}"
        self.configs = {}
        for t in self.types.values():
            match = RESOURCE_RE.search(t.get("docs", {}).get("summary", ""))
            if match and t.get("kind") == "class" and "initializer" in t:
                self.configs[match.group(1)] = t["initializer"]["parameters"][-1]["type"]["fqn"]

    def _properties(self, fqn: str) -> dict:
        t = self.types.get(fqn)
        if t is None:  # cdktn's own interfaces (meta-arguments): not provider schema
            return {}
        props = {p["name"]: p for p in t.get("properties", [])}
        for parent in t.get("interfaces", []):
            if parent.startswith(self.package):
                props.update(self._properties(parent))
        return props

    def _struct(self, type_ref: dict) -> str | None:
        """The provider struct a value of this type is (through unions and arrays)."""
        if "fqn" in type_ref:
            fqn = type_ref["fqn"]
            t = self.types.get(fqn, {})
            return fqn if t.get("kind") == "interface" and t.get("datatype") else None
        if "union" in type_ref:
            found = [self._struct(t) for t in type_ref["union"]["types"]]
            return next((f for f in found if f), None)
        collection = type_ref.get("collection")
        if collection and collection["kind"] == "array":
            return self._struct(collection["elementtype"])
        return None  # primitive or map: any keys

    def check_resource(self, type_: str, name: str, body: dict) -> list[str]:
        if type_ not in self.configs:
            return [f"{type_}.{name}: no such resource type in the provider"]
        errors: list[str] = []
        self._check_struct(body, self.configs[type_], f"{type_}.{name}", errors, top=True)
        return errors

    def _check_struct(self, obj, fqn: str, path: str, errors: list[str], top=False) -> None:
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                self._check_struct(item, fqn, f"{path}[{i}]", errors)
            return
        if not isinstance(obj, dict):
            errors.append(f"{path}: expected a block, got {type(obj).__name__}")
            return
        props = self._properties(fqn)
        for key, value in obj.items():
            if top and key in META:
                continue
            prop = props.get(_camel(key))
            if prop is None:
                errors.append(f"{path}.{key}: not an attribute or block of the schema")
                continue
            struct = self._struct(prop["type"])
            if struct:
                self._check_struct(value, struct, f"{path}.{key}", errors)
        for prop_name, prop in props.items():
            if not prop.get("optional") and _snake(prop_name) not in obj:
                errors.append(f"{path}.{_snake(prop_name)}: required, missing")


    def check_block(self, fqn_suffix: str, body: dict, path: str) -> list[str]:
        """A block that is not a resource (a provider's configuration), by its struct."""
        [fqn] = [f for f in self.types if f.endswith(fqn_suffix)]
        errors: list[str] = []
        self._check_struct(body, fqn, path, errors, top=True)
        return errors


def check_stack(schema: KubernetesSchema | list[KubernetesSchema], stack: dict) -> list[str]:
    """Every resource against the schema of the provider that has its type."""
    schemas = schema if isinstance(schema, list) else [schema]
    errors = []
    for type_, named in sorted(stack.get("resource", {}).items()):
        owner = next((s for s in schemas if type_ in s.configs), schemas[0])
        for name, body in sorted(named.items()):
            errors += owner.check_resource(type_, name, body)
    return errors
