"""Values built once per key in a process: a process that makes several runs (`make paper`'s
points, a test module's runs, an API user's sweep) asks again for what an earlier run built
from equal inputs. Used for a model's abstract shapes (`models.layers.abstract_once`), the
optimizers (`optimizers.adafactor`), the compiled train step (`recipe.Run.train_step`) and
random initialisation (`recipe.Run.random_frozen`).

A key holds everything the value is built from, compared by value (configurations, frozen
dataclasses, shardings) or by identity (functions); an unhashable key (a prompt factory
holding an array) builds every time. The most recent `kept` values are kept.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Hashable


class Memo:
    def __init__(self, kept: int):
        self._kept = kept
        self._values: collections.OrderedDict = collections.OrderedDict()

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The value built for `key`, building it with `build()` the first time."""
        try:
            hash(key)
        except TypeError:
            return build()
        if key not in self._values:
            self._values[key] = build()
            if len(self._values) > self._kept:
                self._values.popitem(last=False)
        self._values.move_to_end(key)
        return self._values[key]
