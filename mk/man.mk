# SPDX-License-Identifier: MIT
# man: see the component it builds.
