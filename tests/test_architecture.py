"""The layout docs/architecture.md draws is the code's: every module is in it, and module-level imports only point
down its list (call-time imports, such as unet_jax.data's one of unet_jax.config, are the documented exceptions)."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "unet_jax"
NAME = re.compile(r"^[a-z_]+(\.py|/)$")


def _order() -> list:
    block = (ROOT / "docs" / "architecture.md").read_text().split("```")[1]
    order = []
    for line in block.splitlines():
        if not line or line[0] == " ":
            continue
        for token in line.split():
            if not NAME.match(token):
                break
            order.append(token.rstrip("/").removesuffix(".py"))
    return order


def _unit(path: Path) -> str:
    """'data' for anything in unet_jax/data/, 'train' for unet_jax/train.py."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _top_level_imports(path: Path) -> set:
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unet_jax"):
            parts = node.module.split(".")[1:]
            out |= {parts[0]} if parts else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("unet_jax.")}
    return out


def test_every_module_is_placed():
    order = _order()
    units = {_unit(p) for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert not units - set(order), f"modules missing from docs/architecture.md: {sorted(units - set(order))}"
    assert len(order) == len(set(order))


def test_imports_point_down():
    rank = {name: i for i, name in enumerate(_order())}
    upward = []
    for path in PACKAGE.rglob("*.py"):
        me = _unit(path)
        if me not in rank:
            continue
        for other in _top_level_imports(path):
            if other in rank and other != me and rank[other] < rank[me]:
                upward.append(f"{path.relative_to(ROOT)} imports unet_jax.{other}")
    assert not upward, upward
