"""Maps the repository's top-level stage folders into the one ``skillgym.*`` namespace.

pyproject.toml holds all metadata; this file only computes the package list, because
setuptools' declarative ``packages.find`` cannot discover sub-packages of remapped folders.
"""

from pathlib import Path

from setuptools import find_packages, setup

# Top-level folder -> import name. ``docker/`` holds image definitions (data, no
# __init__.py on purpose: a regular package named ``docker`` at the repository root
# would shadow the docker SDK whenever the root is on sys.path).
MAPPED = {
    "envs": "skillgym.envs",
    "rollouts": "skillgym.rollouts",
    "training": "skillgym.training",
    "pipeline": "skillgym.pipeline",
    "orchestrator": "skillgym.orchestrator",
    "benchmarks": "skillgym.benchmarks",
    "docker": "skillgym.docker",
    "adapters": "skillgym.adapters",
}
DATA = ["*.md", "*.yaml", "*.yml", "*.json", "*.jsonl", "*.jinja", "*.txt", "*.sh", "Dockerfile*", "*.py"]

packages = find_packages(include=["skillgym", "skillgym.*"])
package_dir = {"skillgym": "skillgym"}
for folder, name in MAPPED.items():
    if not Path(folder).is_dir():
        continue  # a stage not written yet (git keeps no empty folders)
    package_dir[name] = folder
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]
    # Data-only sub-folders (skill texts, task files) travel too.
    for sub in Path(folder).rglob("*"):
        if sub.is_dir() and "__pycache__" not in sub.parts and not (sub / "__init__.py").exists():
            dotted = ".".join(sub.relative_to(folder).parts)
            if f"{name}.{dotted}" not in packages:
                packages.append(f"{name}.{dotted}")

setup(packages=packages, package_dir=package_dir, package_data={pkg: DATA for pkg in packages})
