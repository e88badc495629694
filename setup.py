import re

from setuptools import find_packages, setup


def read(name):
    with open(name, encoding="utf-8") as handle:
        return handle.read()


# the one source of the version: galaxyctl_libs/__init__.py (read, not imported)
VERSION = re.search(r'^__version__ = "([^"]+)"$', read("galaxyctl_libs/__init__.py"), re.M).group(1)

setup(
    name="galaxyctl",
    version=VERSION,
    description="Process manager and health-check toolkit for Galaxy servers",
    long_description=read("README.rst") + "\n\n" + read("CHANGELOG.rst"),
    long_description_content_type="text/x-rst",
    author="The galaxyctl developers",
    license="MIT",
    license_files=["LICENSE"],
    keywords=["galaxy", "gravity", "supervisor", "systemd", "process manager", "health check"],
    packages=find_packages(include=["galaxyctl_libs", "galaxyctl_libs.*"]),
    python_requires=">=3.9",
    install_requires=["pyyaml", "supervisor"],
    extras_require={
        # galaxy-config: Galaxy's sample configs for the tests (the release the e2e test runs)
        "test": [
            "ruff",
            "pytest",
            "pytest-xdist",  # the README's test command runs the suite in two workers
            "hypothesis",
            "gunicorn",
            "celery",
            # tests/test_cluster.py: the interpreter that reads a PostgreSQL database, as Galaxy's does
            # (Galaxy pins SQLAlchemy 2.0 and psycopg2; 2.1 defaults to psycopg 3)
            "sqlalchemy>=2.0,<2.1",
            "psycopg2-binary",
            "uwsgi",
            "build",  # tests/test_packaging.py: python -m build and twine check, as a release would
            "twine",
            "docutils",  # tests/unit/test_readme.py: the README renders without a warning
            "ansible-core",  # tests/test_two_hosts.py runs examples/ansible/rolling-graceful.yml
            'galaxy-config==26.1.2; python_version >= "3.10"',
        ],
    },
    # galaxyctl installs as its own script, not a console-script wrapper: pip's wrapper imports re,
    # which is several milliseconds of a cron `status` (see the script's docstring)
    scripts=["galaxyctl"],
    entry_points={"console_scripts": ["galaxy = galaxyctl_libs.cli.main:run_galaxy"]},
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Console",
        "Intended Audience :: System Administrators",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",  # what CI and the developers' machines run
        "Topic :: System :: Systems Administration",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
)
