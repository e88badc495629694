"""Config files as YAML, read so that hostile input can neither exhaust nor hang galaxyctl.

A config (and each file it includes with ``!include``) must be a regular file of at most MAX_CONFIG_BYTES;
aliases may not make the document larger than MAX_YAML_NODES or deeper than MAX_YAML_DEPTH; an
include lies under the including config's directory or one named in ``$GALAXYCTL_INCLUDE_DIRS``;
as root, every file read must be one that root alone can change (rootpolicy).  Every failure is one
line naming the file (and line, column), quoting at most SHOWN_CHARS of the input.
"""

import os

import yaml

from galaxyctl_libs import fsutil
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.rootpolicy import check_root_controlled

# Bounds on what a config file can make us read and build (galaxy.yml may be writable by the
# Galaxy user, and galaxyctl runs as root).  1 MiB is several times the largest real galaxy.yml or
# job_conf (galaxy.yml.sample, every option with its comment, is about 200 KB).  250,000 nodes is
# about what a 1 MiB file holds written out ("- 1" per line): aliases may share structure but
# never make a document bigger than a file of the size limit could be.  64 levels is far deeper than
# any Galaxy config (about 8) and far from Python's recursion limit, whoever walks the data later.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 250_000
MAX_YAML_DEPTH = 64
MAX_YAML_INT_BITS = 64  # a bigger integer is no setting; past 4300 digits str() of it even raises
INCLUDE_DIRS_ENV = "GALAXYCTL_INCLUDE_DIRS"
SHOWN_CHARS = 40  # of a bad value or an unknown key, in messages
MAX_UNKNOWN_KEY_WARNINGS = 10  # per file; the rest are counted
UNKNOWN_KEY = ": unknown key, ignored"


class YAMLLimitError(yaml.MarkedYAMLError):
    """A document past one of the bounds above (an alias bomb, a recursive alias, absurd nesting)."""


class ConstructorFixes:
    """Constructor fixes shared by the pure-Python and libyaml loaders: PyYAML's scalar constructors
    raise ValueError/AttributeError on some odd input (``2020-13-45``, ``!!timestamp x``, an integer
    of 5000 digits); those become YAML errors with a position, and huge integers are refused."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, AttributeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read this {node.tag.rsplit(':', 1)[-1]} value ({type(exc).__name__})",
                node.start_mark,
            ) from None

    def construct_yaml_int(self, node):
        value = super().construct_yaml_int(node)
        if abs(value).bit_length() > MAX_YAML_INT_BITS:
            raise YAMLLimitError(None, None, f"an integer of more than {MAX_YAML_INT_BITS} bits", node.start_mark)
        return value


class _BoundedLoader(ConstructorFixes, yaml.SafeLoader):
    """SafeLoader that counts, while composing, how many nodes the document stands for once its
    aliases are expanded, and how deep it nests; past ``max_nodes`` / ``max_depth`` it stops.

    Counting at composition costs one pass over the file: a "billion laughs" document is refused
    after reading its few lines, before anything could expand it (repr, comparison, a merge key).
    An alias to a node that contains it (a recursive structure) is refused too.
    """

    max_nodes = MAX_YAML_NODES
    max_depth = MAX_YAML_DEPTH
    start_depth = 0  # an included file starts at the depth of its !include
    document_nodes = 0  # the last document's size, aliases expanded

    def compose_document(self):
        self._sizes = {}  # id(node) -> nodes it stands for, aliases expanded
        self._depth = self.start_depth
        try:
            node = super().compose_document()
            self.document_nodes = self._sizes[id(node)]
            return node
        finally:
            self._sizes = {}

    def compose_node(self, parent, index):
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        if self._depth >= self.max_depth:
            raise YAMLLimitError(None, None, f"nested deeper than {self.max_depth} levels", mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = self._sizes.get(id(node))
        if size is None:
            if alias:
                raise YAMLLimitError(None, None, "an alias to a node that contains it (a recursive structure)", mark)
            size = self._size_of(node)
            if size > self.max_nodes:
                raise YAMLLimitError(
                    None, None, f"aliases expand this document past {self.max_nodes} nodes (a YAML alias bomb?)", mark
                )
            self._sizes[id(node)] = size
        return node

    def _size_of(self, node):
        if isinstance(node, yaml.MappingNode):
            return 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        if isinstance(node, yaml.SequenceNode):
            return 1 + sum(self._sizes[id(item)] for item in node.value)
        return 1


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def parse_yaml(text, name, max_nodes=MAX_YAML_NODES, max_depth=MAX_YAML_DEPTH):
    """``yaml.safe_load`` of ``text`` within the bounds above; raises yaml.YAMLError (the caller words it)."""
    loader = _BoundedLoader(text)
    loader.name = name
    loader.max_nodes, loader.max_depth = max_nodes, max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _IncludeLoader(_BoundedLoader):
    """The bounded loader plus ``!include FILE`` (relative to the including file).

    An include is read while composing, so what it holds counts toward this document's node and
    depth bounds (an alias repeating an include repeats its nodes), and where it may come from is
    checked: see ``_include_target``.
    """

    include_chain = ()
    root_dir = None

    def compose_node(self, parent, index):
        node = super().compose_node(parent, index)
        if isinstance(node, yaml.ScalarNode) and node.tag == "!include" and id(node) not in self._included:
            data, size = _load_include(self, node)
            self._included[id(node)] = data
            self._sizes[id(node)] = size
        return node

    def compose_document(self):
        self._included = {}  # id(node) -> the included data; kept until construction
        return super().compose_document()


MAX_INCLUDE_DEPTH = 10


def _load_include(loader, node):
    value = loader.construct_scalar(node)
    if not isinstance(value, str) or not value:
        raise GalaxyctlError(f"{loader.name}: !include needs a file name")
    base = os.path.dirname(loader.name)
    target = os.path.abspath(os.path.join(base, value))
    chain = loader.include_chain + (os.path.abspath(loader.name),)
    if target in chain or len(chain) > MAX_INCLUDE_DEPTH:
        raise GalaxyctlError(
            f"{loader.name}: !include {clip_repr(value)} includes itself (through {' -> '.join(chain)})"
        )
    # the path as written, too: a link in a directory another user can change would let that user
    # pick which root-owned file gets included (the resolved file is checked when it is read)
    check_root_controlled(target, "included file")
    real = _include_target(loader, value, target)
    return _load_yaml_file(real, chain, loader.root_dir, loader._depth, shown_path=target, follow_symlinks=False)


def _construct_include(loader, node):
    if not isinstance(node, yaml.ScalarNode):
        loader.construct_scalar(node)  # raises "expected a scalar node", with the position
    return loader._included[id(node)]


_IncludeLoader.add_constructor("!include", _construct_include)


def include_dirs(environ=None):
    """The extra directories ``$GALAXYCTL_INCLUDE_DIRS`` allows includes from (resolved)."""
    environ = os.environ if environ is None else environ
    allowed = []
    for entry in environ.get(INCLUDE_DIRS_ENV, "").split(":"):
        if not entry:
            continue
        if not os.path.isabs(entry):
            raise GalaxyctlError(f"{INCLUDE_DIRS_ENV}: {clip_repr(entry)} is not an absolute directory")
        allowed.append(os.path.realpath(entry))
    return allowed


def _inside(path, directory):
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _include_target(loader, value, target):
    """Where ``!include value`` may be read from: a file under the registered config's directory
    (after resolving symlinks and ``..``), or under a directory named in $GALAXYCTL_INCLUDE_DIRS.

    galaxyctl runs as root while galaxy.yml may be writable by the Galaxy user: without this,
    ``!include /etc/shadow`` would have root read any file into a config.
    """
    real = os.path.realpath(target)
    if _inside(real, loader.root_dir) or any(_inside(real, d) for d in include_dirs()):
        return real
    resolved = f" (it resolves to {real})" if real != target else ""
    raise GalaxyctlError(
        f"{loader.name}: !include {clip_repr(value)}: {target}{resolved} is outside {loader.root_dir}, the config's "
        f"directory; move the file there, or allow its directory with {INCLUDE_DIRS_ENV}={os.path.dirname(real)}"
    )


def load_yaml_file(path, include_chain=()):
    """Parse a YAML config file; every failure becomes one line naming the file (and line, column).

    The file must be a regular file of at most MAX_CONFIG_BYTES, its aliases stay within
    MAX_YAML_NODES and MAX_YAML_DEPTH, and its ``!include`` files lie under its directory or one
    named in ``$GALAXYCTL_INCLUDE_DIRS`` (colon-separated absolute directories).
    """
    root_dir = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    return _load_yaml_file(path, include_chain, root_dir, 0)[0]


def read_config_text(path, shown=None, follow_symlinks=True):
    """The text of a config file: as root one that root alone can change (rootpolicy), a regular
    file of at most MAX_CONFIG_BYTES, UTF-8; each failure one line naming the file (``shown``)."""
    shown = shown or path
    check_root_controlled(path, "config file")
    data = fsutil.read_bytes(path, MAX_CONFIG_BYTES, follow_symlinks)
    if data is None:
        raise GalaxyctlError(f"config file not found: {shown}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GalaxyctlError(f"{shown}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _load_yaml_file(path, include_chain, root_dir, depth, shown_path=None, follow_symlinks=True):
    """(data, node count) of one file, ``depth`` levels down in the including document."""
    shown = shown_path or path
    text = read_config_text(path, shown, follow_symlinks)
    loader = None
    try:
        loader = _IncludeLoader(text)  # checks for unprintable characters already
        loader.name = shown
        loader.include_chain = include_chain
        loader.root_dir = root_dir
        loader.start_depth = depth
        return loader.get_single_data(), loader.document_nodes
    except YAMLLimitError as exc:
        raise GalaxyctlError(f"{_where(shown, exc)}: refused: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise GalaxyctlError(f"{_where(shown, exc)}: YAML syntax error: {clip(problem, 160)}") from None
    except yaml.reader.ReaderError as exc:
        raise GalaxyctlError(f"{shown}: YAML error: {reader_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise GalaxyctlError(f"{shown}: YAML error: {clip(str(exc), 160)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def reader_problem(exc):
    """A ReaderError without its ``in "<unicode string>"`` (the text was read before parsing)."""
    character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "a character"
    return f"{character} at position {exc.position}: {exc.reason}"


def _where(path, exc):
    mark = exc.problem_mark or exc.context_mark
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path


# ---------------------------------------------------------------- quoting input in messages


def clip(text, limit=SHOWN_CHARS):
    """``text`` cut to ``limit`` characters (the rest counted): messages quote input, never all of it."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def clip_repr(value):
    """repr of a string, cut to SHOWN_CHARS (the rest counted)."""
    return repr(value) if len(value) <= SHOWN_CHARS else f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"


def _count(number, noun):
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def kind_only(value):
    """Only what type a value is, for a whole file that is not a mapping: its text is not shown."""
    if isinstance(value, str):
        return f"text ({len(value)} characters)"
    if isinstance(value, list):
        return f"a list ({_count(len(value), 'item')})"
    return f"a {type(value).__name__}"
