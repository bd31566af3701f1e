# SPDX-License-Identifier: MIT
# pagemap: see the component it builds.
