/* Shared between programs; lives above the entry's directory. */
#pragma once
#define COMMON 1
