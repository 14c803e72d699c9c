#!/usr/bin/env python3
"""Offline checks of the Helm chart in deploy/helm/sconce, for machines without helm or a cluster.

    python3 deploy/check_chart.py                          # render + structural checks
    python3 deploy/check_chart.py --sconce target/debug/sconce   # also run the rendered command line

It renders every template with a small Go text/template interpreter that knows the subset of Go
template syntax and Sprig/Helm functions this chart uses (an unknown function or syntax is an
error, not a skip), for the default values and for each ci/*-values.yaml plus a few overrides. Then:

- every rendered manifest parses as YAML and has apiVersion, kind and metadata.name;
- cross-references hold: Service selector -> pod labels, named ports, volumes, ConfigMap / PVC /
  Secret names and Secret keys, ServiceMonitor port, HPA target;
- with the `kubernetes` Python package installed, every field name is checked against the
  Kubernetes API models (unknown fields fail; the ServiceMonitor CRD is skipped);
- with --sconce, the init container's bash script runs on the rendered ConfigMap (Secret values
  faked), and the container's args and env are given to `sconce serve ... --print-config`, whose
  output must show the values (host, port, drain timeout, model, device, gateway URLs).

It is not helm: see deploy/README.md for what `helm lint` / `helm template` would add.
Needs PyYAML (`pip install pyyaml`).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent / "helm" / "sconce"


# --------------------------------------------------------------------------------------------------
# A Go text/template interpreter, for the subset this chart uses.


class TemplateError(Exception):
    pass


TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<assign>:=|=)
    | (?P<punct>[()|,])
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)


def tokenize(src: str) -> list[tuple[str, str]]:
    tokens, pos, src = [], 0, src.strip()
    while pos < len(src):
        m = TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot tokenize action at {src[pos:]!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


def lex(text: str) -> list[tuple[str, str]]:
    """Text and action pieces, with {{- and -}} trimming applied and comments removed."""
    pieces: list[tuple[str, str]] = []
    pos, trim_next = 0, False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip()
        if start < 0:
            pieces.append(("text", chunk))
            return pieces
        end = text.find("}}", start)
        if end < 0:
            raise TemplateError("unclosed action")
        inner = text[start + 2 : end]
        if inner.startswith("-") and inner[1:2].isspace():
            chunk = chunk.rstrip()
            inner = inner[1:]
        trim_next = inner.endswith("-") and inner[-2:-1].isspace()
        if trim_next:
            inner = inner[:-1]
        pieces.append(("text", chunk))
        inner = inner.strip()
        if not (inner.startswith("/*") and inner.endswith("*/")):
            pieces.append(("action", inner))
        pos = end + 2


class Node:
    pass


class Text(Node):
    def __init__(self, text):
        self.text = text


class Action(Node):
    def __init__(self, tokens):
        self.tokens = tokens


class Block(Node):
    """if / with / range: branches of (keyword, tokens, body); a final else has tokens None."""

    def __init__(self, keyword, branches):
        self.keyword, self.branches = keyword, branches


def parse(pieces, defines, i=0, stop=("end",)):
    """Parses pieces[i:] until a stop keyword; returns (body, index of the stop action, its tokens)."""
    body: list[Node] = []
    while i < len(pieces):
        kind, value = pieces[i]
        if kind == "text":
            body.append(Text(value))
            i += 1
            continue
        tokens = tokenize(value)
        head = tokens[0][1] if tokens and tokens[0][0] == "ident" else None
        if head in stop:
            return body, i, tokens
        if head in ("if", "with", "range"):
            branches, cond = [], tokens[1:]
            while True:
                inner, i, stop_tokens = parse(pieces, defines, i + 1, ("else", "end"))
                branches.append((head, cond, inner))
                if stop_tokens[0][1] == "end":
                    break
                rest = stop_tokens[1:]
                if rest and rest[0] == ("ident", "if"):
                    head, cond = "if", rest[1:]
                else:
                    head, cond = "else", None
            body.append(Block(branches[0][0], branches))
            i += 1
        elif head == "define":
            name = ast_string(tokens[1])
            inner, i, _ = parse(pieces, defines, i + 1, ("end",))
            defines[name] = inner
            i += 1
        elif head in ("else", "end"):
            raise TemplateError(f"unexpected {{{{ {value} }}}}")
        elif head in ("template", "block", "break", "continue"):
            raise TemplateError(f"unsupported action {value!r}")
        else:
            body.append(Action(tokens))
            i += 1
    if stop != ("end",) or i < len(pieces):
        raise TemplateError(f"missing {{{{ end }}}} (wanted one of {stop})")
    return body, i, None


def ast_string(token):
    kind, value = token
    if kind == "str":
        return bytes(value[1:-1], "utf-8").decode("unicode_escape")
    if kind == "raw":
        return value[1:-1]
    raise TemplateError(f"expected a string, got {value!r}")


def truthy(value) -> bool:
    return not (value is None or value is False or value == 0 or value == "" or value == [] or value == {})


def go_str(value) -> str:
    if value is None:
        return ""  # Helm prints missing values as empty
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        raise TemplateError(f"printing a collection without toYaml: {value!r}")
    return str(value)


def to_yaml(value) -> str:
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def indent(n, text):
    pad = " " * int(n)
    return "\n".join(pad + line for line in go_str(text).split("\n"))


def go_printf(fmt, *args):
    out, args = [], list(args)

    def sub(m):
        spec = m.group(0)
        if spec == "%%":
            return "%"
        value = args.pop(0)
        if spec == "%q":
            return '"' + go_str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        return go_str(value)

    out = re.sub(r"%[svdq%]", sub, fmt)
    if args:
        raise TemplateError(f"printf: too many arguments for {fmt!r}")
    return out


def merge(dest, *sources):
    for source in sources:
        for key, value in (source or {}).items():
            if key not in dest:
                dest[key] = copy.deepcopy(value)
            elif isinstance(dest[key], dict) and isinstance(value, dict):
                merge(dest[key], value)
    return dest


def required(message, value):
    if value is None or value == "":
        raise TemplateError(f"required: {message}")
    return value


def fail(message):
    raise TemplateError(f"fail: {message}")


def number(value):
    if isinstance(value, bool) or value is None:
        return int(bool(value))
    if isinstance(value, str):
        return int(float(value)) if value else 0
    return value


FUNCS = {
    "default": lambda default, value=None: value if truthy(value) else default,
    "quote": lambda *v: " ".join('"' + go_str(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in v),
    "squote": lambda *v: " ".join("'" + go_str(x) + "'" for x in v),
    "trunc": lambda n, s: go_str(s)[: int(n)] if int(n) >= 0 else go_str(s)[int(n) :],
    "trimSuffix": lambda suffix, s: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
    "trimPrefix": lambda prefix, s: s[len(prefix) :] if prefix and s.startswith(prefix) else s,
    "trim": lambda s: go_str(s).strip(),
    "replace": lambda old, new, s: go_str(s).replace(old, new),
    "lower": lambda s: go_str(s).lower(),
    "upper": lambda s: go_str(s).upper(),
    "contains": lambda sub, s: sub in go_str(s),
    "hasPrefix": lambda p, s: go_str(s).startswith(p),
    "printf": go_printf,
    "print": lambda *v: "".join(go_str(x) for x in v),
    "toString": go_str,
    "toYaml": to_yaml,
    "nindent": lambda n, s: "\n" + indent(n, s),
    "indent": indent,
    "sha256sum": lambda s: hashlib.sha256(go_str(s).encode()).hexdigest(),
    "required": required,
    "fail": fail,
    "not": lambda v: not truthy(v),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "ge": lambda a, b: a >= b,
    "le": lambda a, b: a <= b,
    "empty": lambda v: not truthy(v),
    "int": lambda v: int(number(v)),
    "add": lambda *v: sum(int(number(x)) for x in v),
    "mul": lambda *v: __import__("math").prod(int(number(x)) for x in v),
    "list": lambda *v: list(v),
    "append": lambda lst, v: list(lst or []) + [v],
    "join": lambda sep, lst: sep.join(go_str(x) for x in (lst or [])),
    "has": lambda needle, lst: needle in (lst or []),
    "dict": lambda *kv: {go_str(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)},
    "set": lambda d, k, v: (d.__setitem__(k, v), d)[1],
    "merge": merge,
    "deepCopy": copy.deepcopy,
    "ternary": lambda a, b, cond: a if truthy(cond) else b,
}


class Scope:
    """Template variables: `:=` declares in the innermost block, `=` assigns where the variable lives."""

    def __init__(self, parent=None, **names):
        self.parent, self.names = parent, dict(names)

    def child(self):
        return Scope(self)

    def find(self, name):
        scope = self
        while scope is not None:
            if name in scope.names:
                return scope
            scope = scope.parent
        raise TemplateError(f"undefined variable {name}")


class Renderer:
    def __init__(self, root, defines):
        self.root, self.defines = root, defines

    def render(self, body, dot, scope) -> str:
        out = []
        for node in body:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Action):
                value = self.action(node.tokens, dot, scope)
                if value is not _NOTHING:
                    out.append(go_str(value))
            else:
                out.append(self.block(node, dot, scope))
        return "".join(out)

    def block(self, node, dot, scope):
        for keyword, cond, body in node.branches:
            if keyword == "else":
                return self.render(body, dot, scope.child())
            if keyword == "range":
                names, cond = range_vars(cond)
                items = self.pipeline(cond, dot, scope)
                if not truthy(items):
                    continue
                pairs = items.items() if isinstance(items, dict) else enumerate(items)
                out = []
                for key, value in pairs:
                    inner = scope.child()
                    if len(names) == 1:
                        inner.names[names[0]] = value
                    elif len(names) == 2:
                        inner.names[names[0]], inner.names[names[1]] = key, value
                    out.append(self.render(body, value, inner))
                return "".join(out)
            value = self.pipeline(cond, dot, scope)
            if truthy(value):
                return self.render(body, value if keyword == "with" else dot, scope.child())
        return ""

    def action(self, tokens, dot, scope):
        if len(tokens) > 2 and tokens[0][0] == "var" and tokens[1][0] == "assign":
            name = tokens[0][1]
            value = self.pipeline(tokens[2:], dot, scope)
            target = scope.find(name) if tokens[1][1] == "=" else scope
            target.names[name] = value
            return _NOTHING
        return self.pipeline(tokens, dot, scope)

    def pipeline(self, tokens, dot, scope):
        commands, depth, current = [], 0, []
        for token in tokens:
            if token == ("punct", "|") and depth == 0:
                commands.append(current)
                current = []
                continue
            depth += token == ("punct", "(")
            depth -= token == ("punct", ")")
            current.append(token)
        commands.append(current)
        value = _NOTHING
        for command in commands:
            value = self.command(command, dot, scope, value)
        return value

    def command(self, tokens, dot, scope, piped):
        operands, i = [], 0
        while i < len(tokens):
            kind, text = tokens[i]
            if (kind, text) == ("punct", "("):
                depth, j = 1, i + 1
                while depth:
                    depth += tokens[j] == ("punct", "(")
                    depth -= tokens[j] == ("punct", ")")
                    j += 1
                operands.append(("value", self.pipeline(tokens[i + 1 : j - 1], dot, scope)))
                i = j
                continue
            operands.append((kind, text))
            i += 1
        if not operands:
            raise TemplateError("empty command")
        kind, text = operands[0]
        if kind == "ident" and text not in ("true", "false", "nil"):
            args = [self.operand(op, dot, scope) for op in operands[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            if text == "include":
                name, arg = args
                if name not in self.defines:
                    raise TemplateError(f"include of undefined template {name!r}")
                return self.render(self.defines[name], arg, Scope())
            if text in ("and", "or"):
                pick = (lambda v: not truthy(v)) if text == "and" else truthy
                return next((a for a in args if pick(a)), args[-1])
            if text not in FUNCS:
                raise TemplateError(f"unknown function {text!r}")
            return FUNCS[text](*args)
        if len(operands) > 1 or piped is not _NOTHING:
            raise TemplateError(f"cannot call a non-function: {tokens}")
        return self.operand(operands[0], dot, scope)

    def operand(self, op, dot, scope):
        kind, text = op
        if kind == "value":
            return text
        if kind in ("str", "raw"):
            return ast_string(op)
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "ident":
            return {"true": True, "false": False, "nil": None}[text] if text in ("true", "false", "nil") else (
                self.command([op], dot, scope, _NOTHING)
            )
        if kind == "field":
            return walk(dot, text.split(".")[1:] if text != "." else [])
        if kind == "var":
            name, *path = text.split(".")
            if name == "$":
                return walk(self.root, path)
            return walk(scope.find(name).names[name], path)
        raise TemplateError(f"unexpected token {text!r}")


_NOTHING = object()


def walk(value, path):
    for part in path:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise TemplateError(f"cannot read .{part} of {value!r}")
        value = value.get(part)
    return value


def range_vars(tokens):
    if tokens and ("assign", ":=") in tokens:
        cut = tokens.index(("assign", ":="))
        names = [t[1] for t in tokens[:cut] if t[0] == "var"]
        return names, tokens[cut + 1 :]
    return [], tokens


# --------------------------------------------------------------------------------------------------
# The chart


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def render_chart(values, release="demo", namespace="llm"):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    root = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
    }
    defines, bodies = {}, {}
    for path in sorted((CHART / "templates").iterdir()):
        body, _, _ = parse(lex(path.read_text()), defines)
        bodies[path.name] = body
    renderer = Renderer(root, defines)
    out = {}
    for name, body in bodies.items():
        text = renderer.render(body, root, Scope())
        if not name.startswith("_"):
            out[name] = text
    return out


def scenarios():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    yield "defaults", defaults
    for path in sorted((CHART / "ci").glob("*.yaml")):
        yield f"ci/{path.name}", deep_merge(defaults, yaml.safe_load(path.read_text()))
    inline = {
        "gateway": {
            "enabled": True,
            "databaseUrl": {"value": "postgres://sconce:p%40ss@db:5432/sconce"},
            "redisUrl": {"value": "redis://redis:6379/0"},
        },
        "adminKey": {"value": "sk-admin-inline"},
        "hfToken": {"value": "hf_inline"},
        "persistence": {"existingClaim": "models"},
        "serviceAccount": {"create": False, "name": "llm"},
        "extraArgs": ["--metrics-vllm-compat", "true"],
        "extraEnv": [{"name": "RUST_LOG", "value": "info"}],
        "model": {"maxNumSeqs": 64, "maxNumBatchedTokens": 1024, "kvCacheMemory": "1GiB", "device": "cpu"},
    }
    yield "inline-secrets", deep_merge(defaults, inline)
    yield "gateway-auth-off", deep_merge(defaults, {"gateway": {"enabled": True, "auth": "off"}})


# Scenarios the chart must refuse to render, with a word the refusal must contain.
REFUSED = [
    ("gateway-without-admin-key", {"gateway": {"enabled": True}}, "adminKey"),
]


def check_refusals(failures):
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, override, word in REFUSED:
        try:
            render_chart(deep_merge(defaults, override))
        except TemplateError as error:
            failures.check(word in str(error), f"{name}: refused without naming {word}: {error}")
            print(f"{name}: refused as it should be ({error})")
            continue
        failures.append(f"{name}: rendered, but must be refused")


class Failures(list):
    def check(self, ok, message):
        if not ok:
            self.append(message)


def k8s_models():
    try:
        from kubernetes import client  # type: ignore
    except ImportError:
        return None
    return client


def schema_check(client, obj, type_name, where, failures):
    """Unknown field names against the kubernetes Python client's models."""
    if obj is None:
        return
    if type_name.startswith("list["):
        for i, item in enumerate(obj):
            schema_check(client, item, type_name[5:-1], f"{where}[{i}]", failures)
        return
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        for key, item in obj.items():
            schema_check(client, item, inner, f"{where}.{key}", failures)
        return
    model = getattr(client, type_name, None)
    if model is None:
        return  # a primitive, or IntOrString / Quantity (object)
    if not isinstance(obj, dict):
        failures.append(f"{where}: expected an object ({type_name}), got {obj!r}")
        return
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, value in obj.items():
        if key not in by_json:
            failures.append(f"{where}: unknown field `{key}` in {type_name}")
            continue
        schema_check(client, value, model.openapi_types[by_json[key]], f"{where}.{key}", failures)


KINDS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): None,
}


def check_scenario(name, values, rendered, failures, client):
    docs = {}
    for template, text in rendered.items():
        if template == "NOTES.txt":
            failures.check("<no value>" not in text and text.strip(), f"{name}: NOTES.txt is empty or has <no value>")
            continue
        try:
            parsed = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as error:
            failures.append(f"{name}/{template}: not YAML: {error}\n{text}")
            continue
        for doc in parsed:
            key = (doc.get("apiVersion"), doc.get("kind"))
            meta = doc.get("metadata") or {}
            failures.check(key in KINDS, f"{name}/{template}: unexpected apiVersion/kind {key}")
            failures.check(bool(meta.get("name")) and len(meta["name"]) <= 63, f"{name}/{template}: bad metadata.name")
            failures.check(key[1] not in docs, f"{name}: two {key[1]} objects")
            docs[key[1]] = doc
            if client is not None and KINDS.get(key):
                schema_check(client, doc, KINDS[key], f"{name}/{template}", failures)
    deployment, service = docs.get("Deployment"), docs.get("Service")
    if not deployment or not service or "ConfigMap" not in docs:
        failures.append(f"{name}: Deployment, Service and ConfigMap must always render")
        return docs
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    failures.check(
        deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector vs pod labels"
    )
    failures.check(service["spec"]["selector"].items() <= labels.items(), f"{name}: Service selector vs pod labels")
    container = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    failures.check(ports.get("http") == values["server"]["port"], f"{name}: containerPort != server.port")
    failures.check(service["spec"]["ports"][0]["targetPort"] in ports, f"{name}: Service targetPort is not a port name")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        port = container[probe]["httpGet"]["port"]
        failures.check(port in ports, f"{name}: {probe} port {port} is not a container port")
    failures.check(container["readinessProbe"]["httpGet"]["path"] == "/ready", f"{name}: readiness must be /ready")
    failures.check(container["livenessProbe"]["httpGet"]["path"] == "/health", f"{name}: liveness must be /health")
    grace = spec["terminationGracePeriodSeconds"]
    drain = values["server"]["drainTimeoutSeconds"] + values["server"]["preStopSleepSeconds"]
    failures.check(grace > drain, f"{name}: terminationGracePeriodSeconds {grace} <= preStop + drain {drain}")
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec["containers"] + spec.get("initContainers", []):
        for mount in c.get("volumeMounts", []):
            failures.check(mount["name"] in volumes, f"{name}: {c['name']} mounts unknown volume {mount['name']}")
    failures.check(
        volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"], f"{name}: ConfigMap name"
    )
    claim = volumes["data"].get("persistentVolumeClaim")
    if values["persistence"]["enabled"] and not values["persistence"]["existingClaim"]:
        failures.check(
            claim and "PersistentVolumeClaim" in docs and claim["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"],
            f"{name}: PVC name",
        )
    elif values["persistence"]["enabled"]:
        failures.check(claim and claim["claimName"] == values["persistence"]["existingClaim"], f"{name}: existingClaim")
        failures.check("PersistentVolumeClaim" not in docs, f"{name}: a PVC rendered despite existingClaim")
    else:
        failures.check("emptyDir" in volumes["data"], f"{name}: persistence off must be an emptyDir")
    secret = docs.get("Secret")
    for c in spec["containers"] + spec.get("initContainers", []):
        for env in c.get("env", []):
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref and secret and ref["name"] == secret["metadata"]["name"]:
                failures.check(ref["key"] in secret["stringData"], f"{name}: Secret lacks key {ref['key']}")
            elif ref:
                existing = {
                    values["adminKey"]["existingSecret"],
                    values["hfToken"]["existingSecret"],
                    values["gateway"]["databaseUrl"]["existingSecret"],
                    values["gateway"]["redisUrl"]["existingSecret"],
                    *(e["secretName"] for e in values.get("configSecretEnv", [])),
                }
                failures.check(ref["name"] in existing, f"{name}: secretKeyRef to unknown Secret {ref['name']}")
    gpus = values["gpu"]["count"]
    limits = container["resources"].get("limits", {})
    if gpus:
        failures.check(limits.get(values["gpu"]["resourceName"]) == gpus, f"{name}: GPU limit missing")
        failures.check(deployment_image(container).endswith("-cuda") or values["image"]["tag"], f"{name}: CUDA image")
    else:
        failures.check(values["gpu"]["resourceName"] not in limits, f"{name}: GPU limit without gpu.count")
    if "ServiceMonitor" in docs:
        port = docs["ServiceMonitor"]["spec"]["endpoints"][0]["port"]
        failures.check(port in {p["name"] for p in service["spec"]["ports"]}, f"{name}: ServiceMonitor port")
        failures.check(
            docs["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items(),
            f"{name}: ServiceMonitor selector vs Service labels",
        )
    if "HorizontalPodAutoscaler" in docs:
        target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        failures.check(target == deployment["metadata"]["name"], f"{name}: HPA target")
        failures.check("replicas" not in deployment["spec"], f"{name}: replicas set while the HPA owns them")
    return docs


def deployment_image(container):
    return container["image"]


FAKE_SECRET = "postgres://sconce:s3cret@db.example:5432/sconce?sslmode=require"


def run_sconce(name, values, docs, sconce, failures):
    """The init container's script on the rendered ConfigMap, then `sconce serve <args> --print-config`."""
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    container = spec["containers"][0]
    with tempfile.TemporaryDirectory() as tmp:
        chart_dir, run_dir = Path(tmp, "chart"), Path(tmp, "run")
        chart_dir.mkdir()
        run_dir.mkdir()
        (chart_dir / "sconce.toml").write_text(docs["ConfigMap"]["data"]["sconce.toml"])
        script = init["command"][2].replace("/etc/sconce/chart", str(chart_dir)).replace("/etc/sconce/run", str(run_dir))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        fakes = {}
        for item in init.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                fakes[item["name"]] = f"{FAKE_SECRET}&{item['name']}"
                env[item["name"]] = fakes[item["name"]]
        result = subprocess.run([init["command"][0], "-c", script], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            failures.append(f"{name}: init container script failed: {result.stderr}")
            return
        final = (run_dir / "sconce.toml").read_text()
        failures.check("${" not in final, f"{name}: unfilled placeholder in the final config:\n{final}")
        args = [a.replace("/etc/sconce/run", str(run_dir)) for a in container["args"]]
        env = {"PATH": env["PATH"], "HOME": tmp}
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", "fake-secret")
        result = subprocess.run([sconce, *args, "--print-config"], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            failures.append(f"{name}: `sconce {' '.join(args)} --print-config` failed:\n{result.stderr}\n{final}")
            return
        printed = tomllib.loads(result.stdout)
        expect = [
            (printed["server"]["host"], "0.0.0.0", "server.host"),
            (printed["server"]["port"], values["server"]["port"], "server.port"),
            (printed["server"]["drain_timeout_secs"], values["server"]["drainTimeoutSeconds"], "drain"),
            (printed["model"]["name"], values["model"]["name"], "model.name"),
            (printed["model"]["device"], values["model"]["device"] or ("cuda" if values["gpu"]["count"] else "cpu"), "device"),
            (printed["gateway"]["enabled"], bool(values["gateway"]["enabled"]) or None, "gateway.enabled"),
        ]
        gateway = printed["gateway"]
        if values["gateway"]["enabled"]:
            expect[-1] = (gateway["enabled"], True, "gateway.enabled")
            if "GATEWAY_DATABASE_URL" in fakes:
                expect.append((gateway.get("database_url"), fakes["GATEWAY_DATABASE_URL"], "database_url"))
            if "GATEWAY_REDIS_URL" in fakes:
                expect.append((gateway.get("redis_url"), fakes["GATEWAY_REDIS_URL"], "redis_url"))
            expect.append((gateway.get("admin_key_env"), "SCONCE_ADMIN_KEY", "admin_key_env"))
            expect.append((gateway.get("auth"), values["gateway"]["auth"], "auth"))
        else:
            expect[-1] = (gateway["enabled"], False, "gateway.enabled")
        for key, flag in (("servedModelName", "served_model_name"), ("dtype", "dtype")):
            if values["model"][key]:
                expect.append((printed["model"].get(flag), str(values["model"][key]), flag))
        for key, flag in (("maxModelLen", "max_model_len"), ("maxNumSeqs", "max_num_seqs")):
            if values["model"][key]:
                expect.append((printed["engine"].get(flag), int(values["model"][key]), flag))
        for got, want, what in expect:
            failures.check(got == want, f"{name}: --print-config {what} = {got!r}, expected {want!r}")
        print(f"  {name}: sconce accepted {len(args)} args; config {what_config(printed)}")


def what_config(printed):
    g = printed["gateway"]
    return f"model={printed['model']['name']} device={printed['model']['device']} gateway={g['enabled']}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sconce", help="a sconce binary: run the rendered command line with --print-config")
    parser.add_argument("--show", help="print the rendered manifests of this scenario")
    args = parser.parse_args()
    client = k8s_models()
    print("kubernetes models:", "yes (field names checked)" if client else "no (pip install kubernetes to check fields)")
    failures = Failures()
    for name, values in scenarios():
        try:
            rendered = render_chart(values)
        except TemplateError as error:
            failures.append(f"{name}: {error}")
            continue
        if args.show == name:
            for template, text in rendered.items():
                print(f"---\n# Source: sconce/templates/{template}\n{text}")
        docs = check_scenario(name, values, rendered, failures, client)
        print(f"{name}: rendered {', '.join(sorted(docs))}")
        if args.sconce and "Deployment" in docs:
            run_sconce(name, values, docs, args.sconce, failures)
    check_refusals(failures)
    for failure in failures:
        print("FAIL", failure, file=sys.stderr)
    print(f"{'FAILED' if failures else 'ok'}: {len(failures)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
