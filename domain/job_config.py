"""The one job config object.

A `JobConfig` is built from the create request, stored with the job row, handed to the worker, and
written into every artifact manifest, so a published model says exactly how it was made. Fields
named like OpenAI's (`model`, `training_file`, `method`, `suffix`, `seed`, `metadata`) mean what
they mean there; `task`, `targets` and `lora` are edgetune's own.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from domain.answers import answer_problem
from domain.gate_policy import MAX_EVAL_ROWS, MIN_EVAL_ROWS, GatePolicy
from domain.json_schema import schema_problems
from domain.lists import (
    METHOD_TYPES,
    METHODS,
    TASKS,
    AnswerField,
    EvalTaskType,
    MethodType,
    TargetSelect,
    TaskKind,
    TrainingType,
)

Auto = Literal["auto"]

# ---- Limits --------------------------------------------------------------------------------
# Every bound a request is held to, named once (README "Limits" lists them). A request over one
# is a 400 naming the field; a malformed path id is a 404.
MAX_JSON_DEPTH = 64  # nesting of a JSON request body and of each JSONL row of an upload
MAX_ID_LENGTH = 256  # a path id (ftjob-..., file-..., a model name) or an id field of a body
MAX_QUERY_VALUE_LENGTH = 1024  # one query parameter's value
MAX_INT_DIGITS = 18  # an integer in a path (a version number) fits 64 bits
MAX_UNIX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z: the latest time a query may name
MAX_MODEL_LENGTH = 256
# Other bases one sweep target may name (each is a whole fine-tune more in the job).
MAX_SWEEP_MODELS = 4
MAX_TARGET_LENGTH = 64
MAX_LORA_TARGET_MODULES = 64
MAX_METADATA_KEYS = 16  # OpenAI's metadata limits
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512
MAX_DESCRIPTION_LENGTH = 4000  # task.description
MAX_LABELS = 256
MAX_LABEL_LENGTH = 100
MAX_LABEL_DESCRIPTION_LENGTH = 500
MAX_TOOLS = 128
MAX_TOOL_NAME_LENGTH = 64  # OpenAI's limit on a function name
MAX_TOOL_DESCRIPTION_LENGTH = 1024
MAX_SCHEMA_BYTES = 16 * 1024  # a tool's parameters or output_schema, as compact JSON
MAX_SCHEMA_DEPTH = 16  # nesting of objects/arrays within one such schema
MAX_RUBRIC_LENGTH = 2000
MAX_CONSTRAINTS = 20
MAX_CONSTRAINT_LENGTH = 300
MAX_SEED_EXAMPLES = 20
MAX_SEED_INPUT_LENGTH = 4000
MAX_SEED_OUTPUT_BYTES = 16 * 1024

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests objects/arrays deeper than `limit`, found without parsing it (so
    without recursion): strings are skipped, brackets counted. Malformed text is left to the parser."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for m in _JSON_BRACKETS.finditer(_JSON_STRING.sub(b"", data)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _nul_path(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) holding a NUL character, or None."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        v, where = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return where
        elif isinstance(v, dict):
            for k, item in v.items():
                if isinstance(k, str) and "\x00" in k:
                    return where
                stack.append((item, f"{where}.{k}" if where else str(k)))
        elif isinstance(v, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(v))
    return None


def _refuse_nul(value: Any, field: str | None) -> Any:
    """`value` unchanged, or ValueError naming where it holds a NUL (PostgreSQL stores none)."""
    if where := _nul_path(value, field or ""):
        raise ValueError(f"{where}: NUL characters are not allowed")
    return value


def _resolve_pointer(root: Any, ref: str) -> tuple[str, Any] | None:
    """A local `$ref` ('#', '#/$defs/x') resolved in `root`: (its canonical pointer, the node)."""
    if ref == "#":
        return "#", root
    if not ref.startswith("#/"):
        return None
    node, parts = root, []
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        parts.append(part)
    return "#/" + "/".join(parts), node


def schema_limit_problems(schema: Any, where: str) -> list[str]:
    """A schema given in a request (a tool's parameters, an output_schema) against the size and
    depth limits; `$ref` must be local ('#/...'), resolve, and never lead back to itself."""
    try:
        size = len(json.dumps(schema, separators=(",", ":")))
    except (TypeError, ValueError):
        return [f"{where}: must be JSON"]
    if size > MAX_SCHEMA_BYTES:
        return [f"{where}: {size} bytes of JSON, over the {MAX_SCHEMA_BYTES}-byte limit"]
    # Depth, and every node by its JSON pointer (iteratively: no recursion on tenant input).
    nodes: dict[str, Any] = {}
    stack: list[tuple[Any, str, int]] = [(schema, "#", 0)]
    while stack:
        node, pointer, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            return [f"{where}: nested deeper than {MAX_SCHEMA_DEPTH} levels"]
        nodes[pointer] = node
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            if isinstance(child, dict | list):
                token = str(key).replace("~", "~0").replace("/", "~1")
                stack.append((child, f"{'#/' if pointer == '#' else pointer + '/'}{token}", depth + 1))
    # $ref edges; a cycle through them (a schema that contains itself) is refused.
    edges: dict[str, list[str]] = {p: [] for p in nodes}
    for pointer, node in nodes.items():
        if pointer != "#":
            parent = pointer.rsplit("/", 1)[0]
            edges["#" if parent == "#" else parent].append(pointer)
        ref = node.get("$ref") if isinstance(node, dict) else None
        if ref is None:
            continue
        resolved = _resolve_pointer(schema, ref) if isinstance(ref, str) else None
        if resolved is None:
            return [f"{where}: $ref {ref!r} must point inside the schema ('#' or '#/...')"]
        target = resolved[0]
        if target not in nodes:
            return [f"{where}: $ref {ref!r} must point at a schema object"]
        edges[pointer].append(target)
    color: dict[str, int] = {}  # 1: on the DFS stack, 2: done
    for start in edges:
        if start in color:
            continue
        color[start] = 1
        path: list[tuple[str, Any]] = [(start, iter(edges[start]))]
        while path:
            pointer, children = path[-1]
            nxt = next(children, None)
            if nxt is None:
                color[pointer] = 2
                path.pop()
            elif color.get(nxt) == 1:
                return [f"{where}: $ref cycle at {pointer!r}: a schema may not contain itself"]
            elif nxt not in color:
                color[nxt] = 1
                path.append((nxt, iter(edges[nxt])))
    return []


def held_out_count(n_rows: int, min_eval_rows: int = MIN_EVAL_ROWS) -> int:
    """Rows held out for eval when a job has no validation file: ~10%, but at least the
    `min_eval_rows` the gate needs (eval/gate.py MIN_EVAL_ROWS: 20 of a 50-row file) and 2, at most 64
    (the eval runs every model and artifact on each, so its cost grows with targets), and never
    more than half the file, so training keeps at least as many rows as the eval."""
    return min(max(n_rows // 10, min_eval_rows, 2), MAX_EVAL_ROWS, n_rows // 2)


def eval_quota(num_examples: int, eval_fraction: float, min_eval_rows: int = 0) -> int:
    """Rows a synthesized set holds out: `eval_fraction` of those asked for, raised to a job gate's
    `min_eval_rows`, never more than half (training keeps at least as many rows as the eval;
    `eval_fraction` is at most 0.5). The dataset API passes 0: there the fraction is taken as given."""
    return min(max(round(num_examples * eval_fraction), min_eval_rows, 1), num_examples // 2)


TASK_SPEC_VERSION: Literal[2] = 2
# A body with only these keys was written before `type` and `version` existed: it is version 1,
# so a stored job config keeps synthesizing the way it did when it was created.
_V1_KEYS = frozenset({"description", "labels", "num_examples", "eval_fraction"})
# LFM writes a call as Python source, `name(arg=value)`: names must be (dotted) identifiers.
_CALL_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$", re.ASCII)


def _infer_task_type(data: dict[str, Any]) -> str:
    """The first task type (domain/lists.py TASKS, in order) whose answer field the body gives."""
    for kind, facts in TASKS.items():
        if facts.field is not None and _given(data.get(facts.field)):
            return kind
    return "chat"  # free text: the type that names no answer field


def _given(value: Any) -> bool:
    return value is not None and value != []  # an empty list of labels or tools says nothing


# What a task type missing its field is told it needs.
_FIELD_NEEDS: dict[AnswerField, str] = {
    "labels": "labels (at least 2)",
    "output_schema": "an output_schema (a JSON Schema of an object)",
    "tools": "tools (OpenAI function definitions)",
}


def _field_fits_type(field: AnswerField, value: Any, kind: TaskKind | None) -> bool:
    """Whether the answer `field` (given or not) fits a task of `kind`; raises when it does not:
    the kind's own field is required, another kind's field refused. Returns whether to go on
    checking the value (it is given)."""
    facts = TASKS.get(kind) if kind else None  # None: the type itself was invalid or not given
    # an empty list of tools is no tools; an empty list of labels is checked (and refused) below
    if value is None or (field == "tools" and not value):
        if facts is not None and facts.field == field:
            article = "an" if kind and kind[0] in "aeiou" else "a"
            raise ValueError(f"{article} {kind} task needs {_FIELD_NEEDS[field]}")
        return False
    if facts is not None and facts.field != field:
        owners = " or ".join(k for k, f in TASKS.items() if f.field == field)
        verb = "apply" if field.endswith("s") else "applies"
        raise ValueError(f"{field} {verb} to {owners} tasks, not {kind}")
    return True


def _object_schema_problems(schema: Any, where: str) -> list[str]:
    """An object schema (the answer of an extraction task, a tool's parameters) in our subset."""
    problems = schema_problems(schema, where)
    if not problems and schema.get("type", "object") != "object":
        problems.append(f"{where}.type: must be 'object'")
    return problems


def normalize_tool(tool: Any, i: int) -> dict[str, Any]:
    """One tool as OpenAI writes it, `{"type": "function", "function": {name, description,
    parameters}}` (a bare `{name, description, parameters}` is wrapped). ValueError names tools[i]."""
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise ValueError(f"{where}: must be an object of type 'function'")
    fn = tool.get("function", tool)
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}.function.name: every tool needs a name")
    if len(name) > MAX_TOOL_NAME_LENGTH:
        raise ValueError(f"{where}.function.name: at most {MAX_TOOL_NAME_LENGTH} characters")
    if not _CALL_NAME.match(name):
        raise ValueError(f"{where}.function.name: {name!r} must be an identifier (LFM writes {name}(...))")
    description = fn.get("description")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"{where}.function.description: must be a string")
    if description and len(description) > MAX_TOOL_DESCRIPTION_LENGTH:
        raise ValueError(f"{where}.function.description: at most {MAX_TOOL_DESCRIPTION_LENGTH} characters")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    if problems := schema_limit_problems(params, f"{where}.function.parameters"):
        raise ValueError("; ".join(problems))
    if problems := _object_schema_problems(params, f"{where}.function.parameters"):
        raise ValueError("invalid JSON Schema: " + "; ".join(problems))
    if bad := [k for k in params.get("properties", {}) if not str(k).isidentifier()]:
        raise ValueError(f"{where}.function.parameters: argument names {bad!r} must be identifiers")
    return {
        "type": "function",
        "function": {"name": name, "description": description or "", "parameters": params},
    }


class SeedExample(BaseModel):
    """A customer's example: an input a user would send, and optionally its right answer (a label,
    a JSON object, LFM tool-call text, or a reply). Seeds steer the teacher; they are not rows."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=MAX_SEED_INPUT_LENGTH)
    output: str | dict[str, Any] | None = None

    @field_validator("output")
    @classmethod
    def _output_size(cls, v: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        size = len(v) if isinstance(v, str) else len(json.dumps(v)) if v is not None else 0
        if size > MAX_SEED_OUTPUT_BYTES:
            raise ValueError(f"at most {MAX_SEED_OUTPUT_BYTES} characters")
        return v


def _seed_problem(seed: SeedExample, data: dict[str, Any]) -> str | None:
    """Why a seed's output does not fit the task (label set, schema, tools), or None."""
    if seed.output is None:
        return None
    problem = answer_problem(
        data.get("type"),
        seed.output,
        labels=data.get("labels"),
        output_schema=data.get("output_schema"),
        tools={t["function"]["name"]: t["function"] for t in data.get("tools") or []},
    )
    return problem.message if problem else None


class TaskSpec(BaseModel):
    """A plain-language task, used to synthesize data when no training file is given.

    `type` picks what the rows teach: `classification` (answer one of `labels`), `extraction`
    (answer a JSON object valid against `output_schema`), `tool_calling` (answer an LFM tool call
    to one of `tools`) or `chat` (a free-form reply, optionally judged against `rubric`). A body
    without `type` gets it from the fields it has (labels, output_schema, tools, else chat); a
    body without `version` that has only the original keys (description, labels, num_examples,
    eval_fraction) is version 1, anything else the current version.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1, 2] = Field(
        default=TASK_SPEC_VERSION,
        description="Synthesis recipe: 1 = built-in subject list; 2 = teacher-planned topics and "
        "sub-topics, difficulty spread, seeds, constraints, judge.",
    )
    type: TaskKind = Field(default="chat", description="What the fine-tuned model answers with.")
    description: str = Field(
        min_length=8, max_length=MAX_DESCRIPTION_LENGTH, description="What the model must do."
    )
    language: str = Field(
        default="en", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", description="BCP 47 code of the rows."
    )
    num_examples: int = Field(default=48, ge=8, le=5000, description="Rows to generate (train + eval).")
    # at most half: training never gets fewer rows than the eval (infra/job_config.eval_quota)
    eval_fraction: float = Field(default=0.25, gt=0.0, le=0.5, description="Share held out for eval.")
    labels: list[str] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        validate_default=True,
        description="Classification labels; when given, the model is trained to answer with exactly one.",
    )
    label_descriptions: dict[str, str] | None = Field(
        default=None,
        max_length=MAX_LABELS,
        description="Optional meaning of each label, shown to the teacher.",
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, validate_default=True, description="Extraction: the JSON Schema every answer satisfies."
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None,
        max_length=MAX_TOOLS,
        validate_default=True,
        description="Tool calling: OpenAI function tool definitions.",
    )
    rubric: str | None = Field(
        default=None,
        min_length=8,
        max_length=MAX_RUBRIC_LENGTH,
        description="When set, an LLM judge scores each row against it; rows below judge_min_score go.",
    )
    judge_min_score: int = Field(default=4, ge=1, le=5, description="Lowest judge score (1-5) kept.")
    round_trip: Literal["off", "measure", "filter"] = Field(
        default="measure",
        description="Classification and extraction: the teacher answers each synthesized row as the "
        "fine-tuned model will be asked (temperature 0, held to the answer's schema), and the dataset "
        "report says how often it gives the row's answer (the label the text was written for; every "
        "field of the extraction) and, for labels, whether that beats guessing; 'filter' also drops "
        "the rows it disagrees with; 'off' skips it (one teacher request per candidate less).",
    )
    constraints: list[str] = Field(
        default_factory=list,
        max_length=MAX_CONSTRAINTS,
        description="Rules every input must follow, told to the teacher.",
    )
    seed_examples: list[SeedExample] = Field(
        default_factory=list,
        max_length=MAX_SEED_EXAMPLES,
        description="Examples the teacher writes new inputs from.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, v: Any, info: ValidationInfo) -> Any:
        return _refuse_nul(v, info.field_name)

    @model_validator(mode="before")
    @classmethod
    def _infer_type_and_version(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data.setdefault("version", 1 if set(data) <= _V1_KEYS else TASK_SPEC_VERSION)
            data.setdefault("type", _infer_task_type(data))
        return data

    @field_validator("labels")
    @classmethod
    def _labels_fit_the_type(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if not _field_fits_type("labels", v, info.data.get("type")) or v is None:
            return v
        cleaned = [s.strip() for s in v]
        if len(cleaned) < 2:
            raise ValueError("a classification task needs at least 2 labels")
        if any(not s for s in cleaned):
            raise ValueError("labels must be non-empty strings")
        if long := [i for i, s in enumerate(cleaned) if len(s) > MAX_LABEL_LENGTH]:
            raise ValueError(f"labels[{long[0]}]: at most {MAX_LABEL_LENGTH} characters")
        if len({s.lower() for s in cleaned}) != len(cleaned):
            raise ValueError("labels must be distinct (case-insensitive)")
        return cleaned

    @field_validator("label_descriptions")
    @classmethod
    def _descriptions_name_labels(
        cls, v: dict[str, str] | None, info: ValidationInfo
    ) -> dict[str, str] | None:
        if v and (unknown := sorted(set(v) - set(info.data.get("labels") or []))):
            raise ValueError(f"{unknown[:5]!r} are not labels")
        if v and (long := [k for k, d in v.items() if len(d) > MAX_LABEL_DESCRIPTION_LENGTH]):
            raise ValueError(
                f"{long[0]!r}: a description is at most {MAX_LABEL_DESCRIPTION_LENGTH} characters"
            )
        return v

    @field_validator("output_schema")
    @classmethod
    def _schema_is_valid(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if not _field_fits_type("output_schema", v, info.data.get("type")) or v is None:
            return v
        if problems := schema_limit_problems(v, "output_schema"):
            raise ValueError("; ".join(problems))
        problems = _object_schema_problems(v, "output_schema")
        if not problems and not v.get("properties"):
            problems.append("output_schema.properties: name at least one field to extract")
        if problems:
            raise ValueError("invalid JSON Schema: " + "; ".join(problems))
        return v

    @field_validator("tools")
    @classmethod
    def _tools_are_valid(cls, v: list[Any] | None, info: ValidationInfo) -> list[dict[str, Any]] | None:
        if not _field_fits_type("tools", v, info.data.get("type")) or not v:
            return None
        tools = [normalize_tool(t, i) for i, t in enumerate(v)]
        names = [t["function"]["name"] for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be distinct: {names!r}")
        return tools

    @field_validator("constraints")
    @classmethod
    def _constraints_are_short(cls, v: list[str]) -> list[str]:
        cleaned = [c.strip() for c in v]
        if any(not c or len(c) > MAX_CONSTRAINT_LENGTH for c in cleaned):
            raise ValueError(
                f"each constraint is a non-empty sentence of at most {MAX_CONSTRAINT_LENGTH} characters"
            )
        return cleaned

    @field_validator("seed_examples")
    @classmethod
    def _seeds_fit_the_task(cls, v: list[SeedExample], info: ValidationInfo) -> list[SeedExample]:
        for i, seed in enumerate(v):
            if problem := _seed_problem(seed, info.data):
                raise ValueError(f"seed_examples[{i}]: {problem}")
        return v

    @property
    def task_type(self) -> EvalTaskType:
        """The eval scorer's name for this task (eval.metrics.TaskType): chat is scored as generation."""
        return TASKS[self.type].answers

    @property
    def round_trips(self) -> bool:
        """Whether synthesis asks the teacher to answer each row again (the types whose answers
        it can be compared on: domain/lists.py TASKS)."""
        return self.round_trip != "off" and TASKS[self.type].round_trip

    @property
    def seeds_asked_back(self) -> int:
        """The seeds synthesis asks the teacher again, once a run (synth/generate.py
        _round_trip_seeds): those that carry an answer, when the task round-trips. The plan prices
        them as round-trip requests."""
        return sum(s.output is not None for s in self.seed_examples) if self.round_trips else 0

    def tool_schemas(self) -> dict[str, dict[str, Any]]:
        """Each tool's name -> its `function` object (name, description, parameters)."""
        return {t["function"]["name"]: t["function"] for t in self.tools or []}


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_epochs: int | Auto = Field(default="auto", description="Epochs over the training set.")
    batch_size: int | Auto = "auto"
    learning_rate_multiplier: float | Auto = Field(
        default="auto", description="Multiplies the base model's recommended LoRA learning rate."
    )

    @field_validator("n_epochs", "batch_size")
    @classmethod
    def _positive_int(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 50:
            raise ValueError("must be 'auto' or an integer in 1..50")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _positive_float(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0 < float(v) <= 100:
            raise ValueError("must be 'auto' or a number in (0, 100]")
        return v


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class DpoHyperparameters(Hyperparameters):
    beta: float | Auto = Field(
        default="auto",
        description="How strongly the policy is held to the reference model; 'auto' is 0.1 (TRL's default).",
    )

    @field_validator("beta")
    @classmethod
    def _beta_range(cls, v: float | str) -> float | str:
        if isinstance(v, float | int) and not 0 < float(v) <= 2:
            raise ValueError("must be 'auto' or a number in (0, 2]")
        return v


class Dpo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


# Each method's block (a field of Method named as the method, holding its hyperparameters).
_METHOD_BLOCKS: dict[MethodType, type[Supervised | Dpo]] = {"supervised": Supervised, "dpo": Dpo}


class Method(BaseModel):
    """OpenAI's `method` object: `type` names the method and its block holds its hyperparameters.
    The block for the chosen type is filled with defaults when absent; the other must be absent."""

    model_config = ConfigDict(extra="forbid")
    type: MethodType = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None

    @model_validator(mode="after")
    def _one_block(self) -> Method:
        for other in METHOD_TYPES:
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"method.{other} is given but method.type is {self.type!r}")
        if getattr(self, self.type) is None:
            setattr(self, self.type, _METHOD_BLOCKS[self.type]())
        return self

    @property
    def hyperparameters(self) -> Hyperparameters:
        block: Supervised | Dpo | None = getattr(self, self.type)
        assert block is not None  # filled by _one_block
        return block.hyperparameters

    @property
    def beta(self) -> float:
        """DPO's beta with 'auto' resolved (0.1, TRL's default); 0 for supervised jobs."""
        if self.dpo is None:
            return 0.0
        beta = self.dpo.hyperparameters.beta
        return 0.1 if beta == "auto" else float(beta)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, ge=1, le=256)
    alpha: int = Field(default=16, ge=1, le=512)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[Annotated[str, Field(min_length=1, max_length=MAX_MODEL_LENGTH)]] | None = Field(
        default=None,
        max_length=MAX_LORA_TARGET_MODULES,
        description="None picks the base architecture's default (LFM2: all its linears).",
    )


class CheckpointPolicy(BaseModel):
    """Which weights a job ships (recipes/best_checkpoint.py). With `select: best` the train stage
    scores the model `evals` times evenly over the run on at most `eval_rows` held-out rows (greedy,
    the task's metric), keeps the best, and stops once `patience` scores in a row were not better
    (0: train every planned step); `last` ships the last step, as plain TRL does."""

    model_config = ConfigDict(extra="forbid")

    select: Literal["best", "last"] = "best"
    evals: int = Field(default=5, ge=1, le=50)
    eval_rows: int = Field(default=16, ge=1, le=MAX_EVAL_ROWS)
    patience: int = Field(default=2, ge=0, le=50)


class ReplayPolicy(BaseModel):
    """Rehearsal against forgetting (recipes/replay.py): the base model's own answers to general
    prompts, mixed into the training rows, so the fine-tune keeps answering the way the base does
    outside the task. `fraction` replay rows per training row, between `min_rows` and `max_rows`
    (at most the 48 prompts there are); 0 turns it off. Supervised jobs only: a DPO job keeps its
    reference model close by its own loss."""

    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(default=0.5, ge=0.0, le=2.0)
    min_rows: int = Field(default=8, ge=0, le=48)
    max_rows: int = Field(default=48, ge=0, le=48)


def replay_applies(policy: ReplayPolicy, method: MethodType) -> bool:
    """Whether a job mixes replay rows in at all: methods that train on chat rows to add to
    (domain/lists.py METHODS; not DPO's preference pairs), and not when the policy turns it off."""
    return METHODS[method].replay and policy.fraction > 0 and policy.max_rows > 0


def replay_count(train_rows: int, policy: ReplayPolicy, method: MethodType) -> int:
    """Replay rows a job adds to its `train_rows` (the plan and the training process agree)."""
    if not replay_applies(policy, method):
        return 0
    return max(policy.min_rows, min(policy.max_rows, round(train_rows * policy.fraction)))


class TargetBudgets(BaseModel):
    """A target's own budgets on its device, each replacing the profile's (domain/lists.py BUDGETS;
    what each measures: export/profiles.yaml). Each miss is refused or flagged by the profile's rule
    for that budget; a sweep never chooses a candidate that misses one."""

    model_config = ConfigDict(extra="forbid")

    max_artifact_mb: float | None = Field(default=None, gt=0, le=1_000_000)
    max_ram_mb: float | None = Field(default=None, gt=0, le=10_000_000)
    min_decode_tokens_per_s: float | None = Field(default=None, gt=0, le=1_000_000)
    min_prefill_tokens_per_s: float | None = Field(default=None, gt=0, le=10_000_000)


class TargetSpec(BaseModel):
    """A target named with how to pick its artifact; a plain profile name means select "default"."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(min_length=1, max_length=MAX_TARGET_LENGTH)
    budgets: TargetBudgets | None = Field(
        default=None,
        description="Your own limits for this target (artifact MB, RAM MB, decode and prefill "
        "tokens/s on the device), each replacing the profile's: the gate and a sweep's pick judge "
        "the artifact by them.",
    )

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A target without budgets or models reads back as it was sent (the job, its manifest)."""
        data: dict[str, Any] = handler(self)
        for key in ("budgets", "models"):
            if getattr(self, key) is None:
                data.pop(key, None)
        return data

    select: TargetSelect = Field(
        default="default",
        description="'default': the profile's quantization. 'best_within_budget': export every "
        "quantization of the sweep, score each on the held-out rows in its runtime, take its speed "
        "and memory on the device (a device agent's measurement, else the device model's "
        "prediction), and publish the best-scoring one that meets every budget (ties to the faster).",
    )
    models: list[Annotated[str, Field(min_length=1, max_length=MAX_MODEL_LENGTH)]] | None = Field(
        default=None,
        max_length=MAX_SWEEP_MODELS,
        description="With 'best_within_budget': other base models this target may ship instead of "
        "the job's `model`. Each is fine-tuned in this job on the same rows with the same settings, "
        "scored and probed like the job's model, and its quantizations join the sweep; a base whose "
        "fine-tune the gate would refuse (no gain, or forgetting) is not chosen.",
    )

    @model_validator(mode="after")
    def _models_only_in_a_sweep(self) -> TargetSpec:
        if self.models is not None and self.select != "best_within_budget":
            raise ValueError("models: other bases are swept only with select 'best_within_budget'")
        if self.models is not None and len(set(self.models)) != len(self.models):
            raise ValueError("models: a base is named twice")
        return self


def _default_targets() -> list[str | TargetSpec]:
    return ["laptop-cpu"]


class JobConfig(BaseModel):
    """Everything that determines what a fine-tune job produces."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1, max_length=MAX_MODEL_LENGTH, description="Base model id, e.g. LiquidAI/LFM2-350M."
    )
    training_file: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    validation_file: str | None = Field(default=None, max_length=MAX_ID_LENGTH)
    method: Method = Field(default_factory=Method)
    suffix: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    task: TaskSpec | None = None
    targets: list[Annotated[str, Field(max_length=MAX_TARGET_LENGTH)] | TargetSpec] = Field(
        default_factory=_default_targets, min_length=1, max_length=8
    )
    training_type: TrainingType = Field(
        default="lora",
        description="'lora' trains low-rank adapters on the LFM2 linears (and ships the adapter too); "
        "'full' trains every weight (about 10x the memory per parameter, no adapter).",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    replay: ReplayPolicy = Field(
        default_factory=ReplayPolicy,
        description="Mix the base model's own answers to general prompts into training, against "
        "forgetting: `fraction` replay rows per training row.",
    )
    checkpoints: CheckpointPolicy = Field(
        default_factory=CheckpointPolicy,
        description="Ship the checkpoint with the best held-out task score, measured during training "
        "(and stop early when it stops improving), or the last one.",
    )
    gate: GatePolicy = Field(
        default_factory=GatePolicy,
        description="What the fine-tune and each artifact must score on the held-out rows to be "
        "published; the default asks that fine-tuned beats base, each artifact stays within "
        "0.05 of fine-tuned, and fine-tuned loses at most 0.2 on a fixed 32-question "
        "general-ability probe (arithmetic, facts, yes/no, one-word, copy/transform) against base.",
    )
    compute_class: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[a-z0-9][a-z0-9-]*$",
        description="The compute class to train on ('cpu' or a price-book GPU class such as "
        "'h100-80gb'); it must be one of the deployment's pools and fit the job. Default: the "
        "cheapest pool the plan says it fits.",
    )
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Cap on this job's cost: refused at create when the quote exceeds it, stopped "
        "with budget_exhausted if a running job reaches it.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, v: Any, info: ValidationInfo) -> Any:
        # PostgreSQL stores no NUL in text or JSON: refused here, naming the field, not at INSERT
        # (TaskSpec checks its own fields, so the task's are named down to the field).
        return v if info.field_name == "task" else _refuse_nul(v, info.field_name)

    @model_validator(mode="after")
    def _other_bases_cap(self) -> JobConfig:
        # each other base is a whole fine-tune more in this job, whichever target names it
        if len(self.other_models) > MAX_SWEEP_MODELS:
            raise ValueError(
                f"targets: at most {MAX_SWEEP_MODELS} other bases in one job across its sweep targets, "
                f"got {len(self.other_models)}"
            )
        return self

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_limits(cls, v: Any) -> Any:
        # OpenAI's limits: at most 16 pairs, keys <= 64 chars, values strings of <= 512 chars.
        if not isinstance(v, dict):
            return v
        if len(v) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} metadata pairs, got {len(v)}")
        for key, value in v.items():
            if not isinstance(value, str):
                raise ValueError(f"metadata[{str(key)[:MAX_METADATA_KEY_LENGTH]!r}]: values must be strings")
            if len(key) > MAX_METADATA_KEY_LENGTH:
                raise ValueError(
                    f"metadata key {key[:16]!r}...: keys are at most {MAX_METADATA_KEY_LENGTH} characters"
                )
            if len(value) > MAX_METADATA_VALUE_LENGTH:
                raise ValueError(
                    f"metadata[{key!r}]: values are at most {MAX_METADATA_VALUE_LENGTH} characters"
                )
        return v

    @property
    def synthesizes(self) -> bool:
        """Whether the job makes its own data from its task (worker/stages/synthesize.py)."""
        return self.training_file is None and self.task is not None

    @property
    def target_names(self) -> list[str]:
        """The targets' profile names, in order (a target is a name or a TargetSpec)."""
        return [t if isinstance(t, str) else t.profile for t in self.targets]

    def target_select(self, name: str) -> TargetSelect:
        """How the target called `name` picks its artifact."""
        for t in self.targets:
            if not isinstance(t, str) and t.profile == name:
                return t.select
        return "default"

    def target_models(self, name: str) -> list[str]:
        """The bases the target called `name` may ship: the job's model first, then its sweep's others."""
        for t in self.targets:
            if not isinstance(t, str) and t.profile == name and t.models:
                return [self.model, *(m for m in t.models if m != self.model)]
        return [self.model]

    @property
    def other_models(self) -> list[str]:
        """The bases fine-tuned besides `model` (for the sweep targets' `models`), in first-named order."""
        return list(dict.fromkeys(m for name in self.target_names for m in self.target_models(name)[1:]))

    def target_budgets(self, name: str) -> dict[str, float]:
        """The budgets the target called `name` sets itself (export/profiles.py target_profile)."""
        for t in self.targets:
            if not isinstance(t, str) and t.profile == name and t.budgets is not None:
                return t.budgets.model_dump(exclude_none=True)
        return {}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> JobConfig:
        data: Any = yaml.safe_load(text)
        return cls.model_validate(data)
