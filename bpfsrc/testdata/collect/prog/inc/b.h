#pragma once
#include "a.h" /* a cycle */
