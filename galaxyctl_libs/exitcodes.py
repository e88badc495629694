"""Exit codes, named once: plain success/failure, LSB init-script status codes, Nagios plugin codes."""

SUCCESS = 0
FAILURE = 1
USAGE = 2  # argparse's own code for a usage error

# LSB init script "status" action
LSB_RUNNING = 0
LSB_DEAD_PIDFILE = 1
LSB_NOT_RUNNING = 3
LSB_UNKNOWN = 4

# Nagios / Icinga plugin API
NAGIOS_OK = 0
NAGIOS_WARNING = 1
NAGIOS_CRITICAL = 2
NAGIOS_UNKNOWN = 3
NAGIOS_LABELS = {NAGIOS_OK: "OK", NAGIOS_WARNING: "WARNING", NAGIOS_CRITICAL: "CRITICAL", NAGIOS_UNKNOWN: "UNKNOWN"}
