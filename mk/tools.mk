# SPDX-License-Identifier: MIT
# tools: see the component it builds.
