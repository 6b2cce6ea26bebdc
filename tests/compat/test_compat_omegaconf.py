"""omegaconf_compat still reaches OmegaConf's private API; if it moved, one line names the installed omegaconf."""

from __future__ import annotations

import threading
from importlib.metadata import version

import omegaconf.base
import pytest
import yaml
from omegaconf import OmegaConf

from orchestra.compat import omegaconf_compat


def _moved(what: str, err: BaseException | str) -> BaseException:
    """The one-line failure, raised ``from None`` by callers so no traceback of the private call is printed."""
    detail = (err if isinstance(err, str) else f"{type(err).__name__}: {err}").strip().splitlines()
    message = (f"omegaconf {version('omegaconf')} (tested {omegaconf_compat.TESTED}.x): {what} moved or changed "
               f"({detail[0] if detail else '?'}); update orchestra/compat/omegaconf_compat.py")
    return pytest.fail.Exception(message, pytrace=False)


def test_value_nodes_and_raw_values_read_without_resolving():
    cfg = OmegaConf.create({"a": 1, "b": "${a}", "node": {"x": 2}, "items": [1, "${a}"]})
    what = "Container._get_node / Node._value"
    try:
        kinds = [omegaconf_compat.is_value_node(cfg, key) for key in ("a", "b", "node", "items")]
        raw = (omegaconf_compat.raw_value(cfg, "b"), omegaconf_compat.raw_value(cfg["items"], 1))
    except (ImportError, AttributeError, TypeError) as err:
        raise _moved(what, err) from None
    if kinds != [True, True, False, False] or raw != ("${a}", "${a}"):
        raise _moved(what, f"value nodes {kinds}, raw values {raw}") from None
    cfg.b = 5
    cfg.b = raw[0]  # what members.py does to undo a member's override
    if cfg.b != 1:
        raise _moved(what, "a raw interpolation written back no longer resolves") from None


def test_yaml_str_representer_is_omegaconfs_quoting_rule():
    what = "omegaconf._utils.OmegaConfDumper.str_representer"
    try:
        representer = omegaconf_compat.yaml_str_representer()
    except (ImportError, AttributeError) as err:
        raise _moved(what, err) from None

    class Dumper(yaml.Dumper):
        pass

    Dumper.add_representer(str, representer)
    data = {"a": "1", "b": "true", "c": "null", "d": "text", "e": "1e3", "f": 2}
    ours = yaml.dump(data, Dumper=Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)
    if ours != OmegaConf.to_yaml(OmegaConf.create(data)):
        raise _moved(what, f"output differs from OmegaConf.to_yaml: {ours!r}") from None


def test_parse_cache_serves_resolution_and_is_confined_to_the_block():
    what = "omegaconf.base.parse (the interpolation parser resolution calls)"
    original = getattr(omegaconf.base, "parse", None)
    if original is None:
        raise _moved(what, "omegaconf.base has no parse") from None
    text = "${a}-cache-probe"
    cfg = OmegaConf.create({"a": 1, "b": text, "c": text})
    before = omegaconf_compat.parse_cache_info()
    with omegaconf_compat.interpolations_parsed_once():
        if OmegaConf.to_container(cfg, resolve=True) != {"a": 1, "b": "1-cache-probe", "c": "1-cache-probe"}:
            raise _moved(what, "resolution gives other values inside the block") from None
        with omegaconf_compat.interpolations_parsed_once():  # nested blocks (one member inside another) are fine
            OmegaConf.to_container(cfg, resolve=True)
        seen_elsewhere = []
        other = threading.Thread(target=lambda: seen_elsewhere.append(omegaconf_compat.parse_cache_info().hits
                                                                       if cfg.b else None))
        hits = omegaconf_compat.parse_cache_info().hits
        other.start()
        other.join()
        if omegaconf_compat.parse_cache_info().hits != hits:
            pytest.fail("another thread's resolution used the parse cache; it must be confined to the block's thread")
    after = omegaconf_compat.parse_cache_info()
    if after.hits - before.hits < 2 or after.misses - before.misses > 1:
        raise _moved(what, f"resolution no longer goes through it (cache {after})") from None
    if omegaconf.base.parse is not original:
        pytest.fail("omegaconf.base.parse was not restored after the block")
    with pytest.raises(RuntimeError), omegaconf_compat.interpolations_parsed_once():
        raise RuntimeError("a failing member")
    if omegaconf.base.parse is not original:
        pytest.fail("omegaconf.base.parse was not restored after a block that raised")
