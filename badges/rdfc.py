"""RDF Dataset Canonicalization (RDFC-1.0) of JSON-LD with PyLD, byte for byte as JavaScript's rdf-canonize writes
it: the canonicalization that the JS verifiers (the DCC's verifier-core, 1EdTech's validator) check proofs with.

PyLD's URDNA2015 is the RDFC-1.0 algorithm, but its N-Quads differ from rdf-canonize's in two ways:
- escaping: RDFC-1.0 writes `\\b \\t \\n \\f \\r \\" \\\\` in literals as ECHARs and every other C0 control and DEL
  as `\\uXXXX`, and escapes U+0000-U+0020 `<>"{}|^` backtick and backslash inside IRIs; PyLD leaves most raw;
- order: rdf-canonize sorts JS strings (UTF-16 code units), PyLD Python strings (code points); they disagree when
  an emoji (surrogates D800-DFFF) meets a character of U+E000-U+FFFF.
Both matter inside the algorithm too (Hash First Degree Quads serializes and sorts each blank node's quads, so they
change blank node labels), so PyLD's algorithm runs here with our serializer bound in its place: nothing of PyLD is
copied or patched globally. Achievement names come from an LLM, hence the care.
"""

from __future__ import annotations

import json
import re
import threading
import types
from pathlib import Path

from cachetools import LRUCache
from pyld import canon as pyld_canon
from pyld import jsonld
from pyld.context_resolver import ContextResolver
from pyld.documentloader.frozen import FrozenDocumentLoader

CONTEXTS = Path(__file__).parent / "contexts"
XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
RDF_LANGSTRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"

_ECHAR = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}
_IN_LITERAL = re.compile(r'[\x00-\x1f\x7f"\\]')
_IN_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\]')


def _uchar(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04X}"


def escape_literal(value: str) -> str:
    """A literal's text as canonical N-Quads write it."""
    return _IN_LITERAL.sub(lambda m: _ECHAR.get(m.group()) or _uchar(m), value)


def escape_iri(value: str) -> str:
    """An IRI as canonical N-Quads write it."""
    return _IN_IRI.sub(_uchar, value)


class NQuad(str):
    """One N-Quad line that sorts as a JavaScript string does, by UTF-16 code units (list.sort uses __lt__)."""

    __slots__ = ()

    def __lt__(self, other: str) -> bool:
        return self.encode("utf-16-be", "surrogatepass") < other.encode("utf-16-be", "surrogatepass")


def _term(component: dict) -> str:
    return f"<{escape_iri(component['value'])}>" if component["type"] == "IRI" else component["value"]


def serialize_nquad(quad: dict, graph_name: str | None = None) -> NQuad:
    """A quad of PyLD's dataset as a canonical N-Quad (the signature of pyld.nquads.serialize_nquad)."""
    obj = quad["object"]
    line = f"{_term(quad['subject'])} {_term(quad['predicate'])} "
    if obj["type"] in ("IRI", "blank node"):
        line += _term(obj)
    else:
        line += f'"{escape_literal(obj["value"])}"'
        if obj["datatype"] == RDF_LANGSTRING:
            line += f"@{obj['language']}" if obj.get("language") else ""
        elif obj["datatype"] != XSD_STRING:
            line += f"^^<{escape_iri(obj['datatype'])}>"
    graph = quad.get("name", {"value": graph_name, "type": "IRI"})
    if graph["value"] is not None:
        line += " " + (graph["value"] if graph["value"].startswith("_:") else f"<{escape_iri(graph['value'])}>")
    return NQuad(line + " .\n")


# URDNA2015 calls the module-level serialize_nquad in exactly main and hash_first_degree_quads: rebinding those two
# to a namespace where that name is ours changes nothing else. A PyLD upgrade that moves the call fails here, loudly.
_NAMESPACE = {**vars(pyld_canon), "serialize_nquad": serialize_nquad}
_CALLERS = {name for name, member in vars(pyld_canon.URDNA2015).items()
            if isinstance(member, types.FunctionType) and "serialize_nquad" in member.__code__.co_names}
if _CALLERS != {"main", "hash_first_degree_quads"}:
    raise ImportError(f"pyld.canon.URDNA2015 writes N-Quads in {sorted(_CALLERS)}: badges/rdfc.py must be revisited")


def _rebound(function: types.FunctionType) -> types.FunctionType:
    return types.FunctionType(function.__code__, _NAMESPACE, function.__name__, function.__defaults__,
                              function.__closure__)


class RDFC10(pyld_canon.URDNA2015):
    """PyLD's URDNA2015 (RDFC-1.0 with SHA-256) writing and sorting N-Quads as rdf-canonize does."""

    main = _rebound(pyld_canon.URDNA2015.main)
    hash_first_degree_quads = _rebound(pyld_canon.URDNA2015.hash_first_degree_quads)


def context_loader(*folders: Path) -> FrozenDocumentLoader:
    """A JSON-LD document loader that serves the contexts listed in each folder's manifest.json, and nothing else."""
    documents = {}
    for folder in folders or (CONTEXTS,):
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        documents.update({url: folder / entry["file"] for url, entry in manifest.items()})
    return FrozenDocumentLoader(documents)


class UnsafeDocument(ValueError):
    """Something JSON-LD would drop without a word, and that the JS verifiers (safe mode) refuse."""


_ABSOLUTE_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]*$")


def _check_expanded(node: object, where: str) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_expanded(item, f"{where}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "@id" and not (value.startswith("_:") or _ABSOLUTE_IRI.match(value)):
            raise UnsafeDocument(f"{where}: @id {value!r} is not an absolute IRI")
        if key == "@type":
            for type_ in value if isinstance(value, list) else [value]:
                if not _ABSOLUTE_IRI.match(type_):
                    raise UnsafeDocument(f"{where}: type {type_!r} is not defined by the contexts")
        if key != "@value":
            _check_expanded(value, f"{where}.{key}")


class Canonicalizer:
    """JSON-LD document -> canonical N-Quads, with contexts from files only.

    `safe=True` (the default) refuses, as the JS verifiers' safe mode does, a term no context defines (PyLD would
    drop it, and a signature would then not cover it), an undefined type, a relative IRI or one with a space.
    """

    def __init__(self, loader: FrozenDocumentLoader | None = None, safe: bool = True):
        self.loader = loader or context_loader()
        self.safe = safe
        self._resolver = ContextResolver(LRUCache(maxsize=100), self.loader)

    def _options(self) -> dict:
        # base None, as the JS verifiers: PyLD's default resolves a relative IRI against http://example.org/base/,
        # which would sign a triple no verifier sees.
        return {"documentLoader": self.loader, "contextResolver": self._resolver, "base": None}

    def check(self, document: dict) -> None:
        """Raise UnsafeDocument for what JSON-LD safe mode refuses."""
        dropped: list[str] = []
        expanded = jsonld.JsonLdProcessor(on_property_dropped=lambda term: dropped.append(str(term))).expand(
            document, self._options())
        if dropped:
            raise UnsafeDocument(f"terms the contexts do not define: {sorted(set(dropped))}")
        _check_expanded(expanded, "$")

    def canonize(self, document: dict) -> str:
        """The canonical N-Quads of the document, as rdf-canonize (RDFC-1.0) writes them."""
        if self.safe:
            self.check(document)
        dataset = jsonld.JsonLdProcessor().to_rdf(document, {**self._options(), "produceGeneralizedRdf": False})
        return RDFC10().main(dataset, {"format": "application/n-quads"})


_LOADER = context_loader()  # reads the manifest now, each file on first use
_local = threading.local()


def canonicalizer() -> Canonicalizer:
    """This thread's canonicalizer on the repository's contexts (PyLD's context cache is not made for threads)."""
    if getattr(_local, "canonicalizer", None) is None:
        _local.canonicalizer = Canonicalizer(_LOADER)
    return _local.canonicalizer
