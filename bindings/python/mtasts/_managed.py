"""The one base class for objects that own a handle of the C library (after wasmtime-py's
``_managed.py``): ``close()``, ``with``, ``__del__``, and an error on use after close.

Beyond wasmtime's model, it keeps the C contract "no call on the handle may be running when it is
freed" for threaded callers, and the contract on ``fork()``:

* Every C call on a handle is bracketed by :meth:`Managed._acquire` / :meth:`Managed._release`,
  which count the calls in flight. ``close()`` refuses new calls at once, and the handle is freed
  by whoever finishes last: ``close()`` itself when no call is running, else the last call to
  return. So ``close()`` from one thread while another is inside ``check()`` is safe.
* The counts are kept under one module-wide (reentrant) lock, held for a few instructions and
  never across a check. ``os.register_at_fork`` takes that lock around ``fork()``, so that in the
  child the counts say exactly which handles another thread of the parent was using at the moment
  of the fork. Such a handle may hold a lock of that (now vanished) thread: in the child it is
  *abandoned*: calls on it raise :class:`~mtasts.MtastsError`, and closing it does not free it
  (freeing could block forever; the memory is left for the child's exit). Handles no thread was
  using stay usable in the child, as the C header allows; still, the safe course is a new handle
  in the child.
"""

from __future__ import annotations

import os
import threading
import weakref
from abc import ABC, abstractmethod
from typing import Optional, TypeVar

from ._errors import ClosedError, MtastsError

_T = TypeVar("_T", bound="Managed")

# Guards the bookkeeping of every handle; never held across a C call of a running check.
# Reentrant: a garbage collection inside a critical section may run __del__ -> close() of another
# handle on the same thread.
_lock = threading.RLock()
# Every live handle, to mark the ones in use at a fork() in the child.
_live: "weakref.WeakSet[Managed]" = weakref.WeakSet()


def _before_fork() -> None:
    _lock.acquire()


def _after_fork_in_parent() -> None:
    _lock.release()


def _after_fork_in_child() -> None:
    # Only the forking thread exists now, and it holds the lock (taken in _before_fork).
    for handle in list(_live):
        if handle._in_flight:
            handle._abandoned = True
            handle._in_flight = 0
    _lock.release()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


class Managed(ABC):
    """Abstract base of the objects that own a pointer from the C library.

    Subclasses call :meth:`_set_ptr` once in ``__init__``, implement :meth:`_delete` with the C
    ``_free`` function, and wrap every C call in ``ptr = self._acquire()`` / ``try: ... finally:
    self._release()``.

    Not exported from the package.
    """

    # Class-level defaults, so that close() and __del__ work on an object whose __init__ failed.
    _ptr: Optional[int] = None
    _closed: bool = False
    _in_flight: int = 0
    _abandoned: bool = False

    @abstractmethod
    def _delete(self, ptr: int) -> None:
        """Runs the C destructor for ``ptr``."""

    def _set_ptr(self, ptr: int) -> None:
        """Takes ownership of ``ptr`` (once)."""
        if self._ptr is not None or self._closed:
            raise ValueError("already initialized")
        self._ptr = ptr
        with _lock:
            _live.add(self)

    def _acquire(self) -> int:
        """Marks the start of a C call and returns the pointer to pass; raises if closed."""
        with _lock:
            ptr = self._ptr
            if ptr is None or self._closed:
                raise ClosedError(f"this {type(self).__name__} is closed")
            if self._abandoned:
                raise MtastsError(
                    f"this {type(self).__name__} was in use by another thread when the process "
                    f"forked, so it cannot be used in the child: create a new "
                    f"{type(self).__name__} in the child"
                )
            self._in_flight += 1
            return ptr

    def _release(self) -> None:
        """Marks the end of a C call; frees the handle if it was closed meanwhile."""
        with _lock:
            self._in_flight -= 1
            ptr = self._take_if_unused()
        if ptr is not None:
            self._delete(ptr)

    def _take_if_unused(self) -> Optional[int]:
        # Called with _lock held: the pointer to free now, if closed and no call is running.
        if self._closed and self._in_flight == 0 and not self._abandoned:
            ptr, self._ptr = self._ptr, None
            return ptr
        return None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Releases the C object. Further calls raise; closing again does nothing.

        Thread-safe: calls running in other threads finish normally, and the last of them
        releases the object.
        """
        try:
            lock = _lock
        except NameError:  # interpreter shutdown: module globals are gone
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            ptr = self._take_if_unused()
        if ptr is not None:
            self._delete(ptr)

    def __enter__(self: _T) -> _T:
        """Returns ``self``, to be closed at the end of the ``with`` block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Closes the object."""
        self.close()

    def __del__(self) -> None:
        """Closes the object if it is still open when collected."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing may escape __del__ (shutdown, half-built)
            pass
