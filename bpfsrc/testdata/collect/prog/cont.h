#pragma once
#define CONT 1
