# SPDX-License-Identifier: MIT
# core: see the component it builds.
