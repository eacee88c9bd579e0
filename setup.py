"""Package discovery; everything else is in pyproject.toml.

The repository keeps ``robots/`` and ``config/`` at the top level (see
DESIGN.md); they install as ``mailcoach_robots`` and
``mailcoach_server.defaults`` so they cannot clash in site-packages. Every
package below those directories is found, none is listed by hand: a new
subpackage ships without anyone remembering to add it. Namespace discovery,
so a data directory (``config/memory``) is a package of its own and
setuptools does not warn that it would be left out.
"""

from setuptools import find_namespace_packages, setup

# Installed name -> directory in the repository.
ROOTS = {"mailcoach_server": "mailcoach_server", "mailcoach_robots": "robots",
         "mailcoach_server.defaults": "config"}


def discovered() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for name, directory in ROOTS.items():
        packages.append(name)
        package_dir[name] = directory
        for sub in find_namespace_packages(where=directory, exclude=["*__pycache__*"]):
            packages.append(f"{name}.{sub}")
            package_dir[f"{name}.{sub}"] = f"{directory}/{sub.replace('.', '/')}"
    return packages, package_dir


packages, package_dir = discovered()
setup(packages=packages, package_dir=package_dir)
