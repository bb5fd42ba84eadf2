"""The one way the Python conformance scripts record a check: run it at once, keep its outcome.

    from checks import check, checks
    @check("name")
    def _(): ...            # raise to fail; return a dict to add details
    print(json.dumps({"checks": checks}))
"""
import traceback

checks = {}


def check(name):
    def wrap(fn):
        try:
            extra = fn() or {}
            checks[name] = {"ok": True, **extra}
        except Exception as e:
            checks[name] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:400]}", "trace": traceback.format_exc()[-800:]}
        return fn
    return wrap
