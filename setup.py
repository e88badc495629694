from setuptools import find_packages, setup

setup(
    name="galaxyctl",
    version="0.1.0",
    description="Process manager and health-check toolkit for Galaxy servers",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
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
            "uwsgi",
            'galaxy-config==26.1.2; python_version >= "3.10"',
        ],
    },
    # galaxyctl installs as its own script, not a console-script wrapper: pip's wrapper imports re,
    # which is several milliseconds of a cron `status` (see the script's docstring)
    scripts=["galaxyctl"],
    entry_points={"console_scripts": ["galaxy = galaxyctl_libs.cli.main:run_galaxy"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Environment :: Console",
        "Topic :: System :: Systems Administration",
    ],
)
