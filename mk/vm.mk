# SPDX-License-Identifier: MIT
# vm: see the component it builds.
