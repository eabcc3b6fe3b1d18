"""Starts postfix-mta-sts-resolver (mta-sts-daemon) for the socketmap benchmark with its
in-memory cache already holding the benchmark's policies.

The daemon resolves through the system resolver and fetches policies from port 443, which cannot
reach the benchmark's local DNS and HTTPS fixtures. So this launcher fills its cache (the same
`CacheEntry(ts, pol_id, pol_body)` values a successful fetch stores, parsed by its own
`parse_mta_sts_policy`) and replaces its network resolver by one that prints `NETWORK ATTEMPT` on
stderr, which fails the benchmark. With `cache_grace` of a day in the configuration, every request
is answered from the cache: the path measured for mtasts too.

Usage: python resolver_launcher.py -c mta-sts-daemon.yml [other mta-sts-daemon options]
"""

import sys
import time

from postfix_mta_sts_resolver import daemon, internal_cache, resolver
from postfix_mta_sts_resolver.base_cache import CacheEntry
from postfix_mta_sts_resolver.utils import parse_mta_sts_policy

POLICIES = {
    "enforce.test": "version: STSv1\nmode: enforce\nmx: mx.enforce.test\nmx: *.backup.enforce.test\nmax_age: 604800\n",
    "testing.test": "version: STSv1\nmode: testing\nmx: mx.testing.test\nmax_age: 604800\n",
    "none.test": "version: STSv1\nmode: none\nmax_age: 604800\n",
}


def _entries():
    now = time.time()
    for domain, text in POLICIES.items():
        pol = parse_mta_sts_policy(text)
        pol["max_age"] = int(pol["max_age"])
        yield domain, CacheEntry(now, "bench1", pol)


_setup = internal_cache.InternalLRUCache.setup


async def _setup_filled(self):
    await _setup(self)
    for domain, entry in _entries():
        await self.set(domain, entry)


async def _no_network(self, domain, last_known_id=None):
    print("NETWORK ATTEMPT for %s" % domain, file=sys.stderr, flush=True)
    return resolver.STSFetchResult.FETCH_ERROR, None


internal_cache.InternalLRUCache.setup = _setup_filled
resolver.STSResolver.resolve = _no_network

if __name__ == "__main__":
    sys.exit(daemon.main())
