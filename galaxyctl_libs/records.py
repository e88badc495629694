"""Immutable named records for the modules ``status`` and ``check`` load on every cron run.

They read like frozen dataclasses (annotated fields, defaults as class attributes) and support
``asdict`` and ``replace``, but cost nothing to import: ``dataclasses`` pulls in ``inspect``,
``ast``, ``dis`` and ``tokenize`` and compiles code for each class, about 10 ms per run.  The
configuration schema (config.py) keeps dataclasses; it is only loaded by commands that read YAML.
"""


class Record:
    """Fields are the class's annotations, in order; a class attribute of the same name is its default.

    ``_not_compared`` names fields left out of ``==`` and ``hash`` (settings carried for show only).
    """

    _fields = ()
    _field_set = frozenset()
    _defaults = {}
    _not_compared = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = [name for name in cls.__dict__.get("__annotations__", {}) if name not in cls._fields]
        cls._fields = cls._fields + tuple(own)
        cls._field_set = frozenset(cls._fields)
        cls._defaults = {**cls._defaults, **{name: cls.__dict__[name] for name in own if name in cls.__dict__}}

    def __init__(self, *args, **kwargs):
        # set operations rather than a loop per field: the applied record of 2,000 services builds
        # 4,000 records on every status (a loop per field cost ~16 us a record)
        fields = self._fields
        if args:
            if len(args) > len(fields):
                raise TypeError(f"{type(self).__name__}() takes {len(fields)} fields, {len(args)} given")
            values = dict(zip(fields, args))
            twice = values.keys() & kwargs.keys()
            if twice:
                raise TypeError(f"{type(self).__name__}() got field {min(twice)!r} twice")
            values.update(kwargs)
        else:
            values = kwargs
        unexpected = values.keys() - self._field_set
        if unexpected:
            raise TypeError(f"{type(self).__name__}() got an unexpected field {min(unexpected)!r}")
        if len(values) < len(fields):
            for name in fields:
                if name not in values:
                    if name not in self._defaults:
                        raise TypeError(f"{type(self).__name__}() is missing field {name!r}")
                    values[name] = self._defaults[name]
        self.__dict__.update(values)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable (use records.replace)")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _compared(self):
        return tuple(self.__dict__[name] for name in self._fields if name not in self._not_compared)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self):
        return hash(self._compared())

    def __repr__(self):
        inner = ", ".join(f"{name}={self.__dict__[name]!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"


def replace(record, **changes):
    """A copy of ``record`` with some fields changed (``dataclasses.replace`` for records)."""
    return type(record)(**{**{name: record.__dict__[name] for name in record._fields}, **changes})


def asdict(value):
    """Records (and dataclasses, lists, tuples, dicts) as plain data for JSON, recursively."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Record):
        return {name: asdict(value.__dict__[name]) for name in value._fields}
    if hasattr(type(value), "__dataclass_fields__"):
        import dataclasses

        return asdict({field.name: getattr(value, field.name) for field in dataclasses.fields(value)})
    if isinstance(value, (list, tuple)):
        items = [asdict(item) for item in value]
        return tuple(items) if type(value) is tuple else items
    if isinstance(value, dict):
        return {key: asdict(item) for key, item in value.items()}
    return value
